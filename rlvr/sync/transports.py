"""Weight sync: the learner's new weights into every running vLLM engine, in place, after each step.

Transports behind one `push(version) -> seconds`, chosen by `rollout.weight_sync`:
- `SharedMemorySync` (CPU default): the learner writes its weights, in the engines' dtype, into one
  /dev/shm file; engines on its node load views of it (rlvr/sync/shared_memory.py). Engines on other nodes
  get the object store.
- `ObjectStoreSync`: the learner's tensors go through Ray's object store into each worker's
  `load_weights`. Works across nodes; the slowest (three copies of the model per sync).
- `TransferSync`: vLLM's weight-transfer API, the learner driving a group with every engine's workers
  (`EngineGroupClient`): NCCL broadcast of the engines' dtype from rank 0 on GPU (vLLM's
  `NCCLTrainerWeightTransferEngine`), or rlvr's gloo backend on CPU (rlvr/sync/gloo_transfer.py), which runs
  the same orchestration where there is no GPU.

Every wait has a deadline (`rollout.sync_timeout_s`): a failed or stuck engine is an error naming the
engine (index and actor), never a hang. The weights always come from one learner actor (rank 0 of the
learner group). After each CPU load the engine re-packs its GEMM weights (rlvr/rollout/vllm_cpu.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

import ray
import torch

from rlvr.runtime.remote import free_port, wait, wait_all

SETTING = "rollout.sync_timeout_s"


class WeightSync(Protocol):
    def push(self, version: int) -> float:
        """Make every engine serve the learner's current weights as `version`; returns seconds spent."""
        ...


def wait_engines(refs: list, workers: list, call: str, timeout_s: float) -> list:
    """Results of one call per engine, all within `timeout_s`; else an error naming the engines that failed
    or did not answer (index and actor)."""
    roles = [f"rollout engine {i} (actor {_actor_id(w)})" for i, w in enumerate(workers)]
    return wait_all(refs, roles=roles, call=call, timeout_s=timeout_s, setting=SETTING)


def _actor_id(handle) -> str:
    return handle._actor_id.hex()[:12]


class ObjectStoreSync:
    def __init__(self, learner: ray.actor.ActorHandle, workers: list[ray.actor.ActorHandle], timeout_s: float) -> None:
        self.learner, self.workers, self.timeout_s = learner, workers, timeout_s

    def push(self, version: int) -> float:
        start = time.perf_counter()
        weights = self.learner.named_weights.remote()  # one object, read by every worker
        wait_engines([w.load_weights.remote(weights, version) for w in self.workers], self.workers,
                     "load_weights", self.timeout_s)
        return time.perf_counter() - start


class SharedMemorySync:
    """Engines on the learner's node read its shared-memory file; the others get the object store."""

    def __init__(self, learner: ray.actor.ActorHandle, workers: list[ray.actor.ActorHandle], timeout_s: float) -> None:
        self.learner, self.workers, self.timeout_s = learner, workers, timeout_s
        self.nodes = wait_engines([w.node_id.remote() for w in workers], workers, "node_id", timeout_s)
        self.unlinked = False

    def push(self, version: int) -> float:
        start = time.perf_counter()
        manifest = wait(self.learner.write_shared_weights.remote(), role="learner", call="write_shared_weights",
                        timeout_s=self.timeout_s, setting=SETTING)
        remote = [n != manifest.node_id for n in self.nodes]
        weights = self.learner.named_weights.remote() if any(remote) else None
        refs = [w.load_weights.remote(weights, version) if far else w.load_shared_weights.remote(manifest, version)
                for w, far in zip(self.workers, remote)]
        try:
            wait_engines(refs, self.workers, "load_weights / load_shared_weights", self.timeout_s)
        finally:
            # After the first push every local engine holds its mapping, so the name can go; after a failed one
            # the run is over, and the name goes too (a learner killed later would leave the file behind).
            if not self.unlinked:
                wait(self.learner.unlink_shared_weights.remote(), role="learner", call="unlink_shared_weights",
                     timeout_s=self.timeout_s, setting=SETTING)
                self.unlinked = True
        return time.perf_counter() - start


class TransferSync:
    """vLLM's weight-transfer API, driven by the learner: `backend` "nccl" (GPU) or "rlvr_gloo" (CPU)."""

    def __init__(self, learner: ray.actor.ActorHandle, workers: list[ray.actor.ActorHandle], tp_sizes: list[int],
                 backend: str, timeout_s: float) -> None:
        self.learner, self.workers, self.timeout_s = learner, workers, timeout_s
        # Outer deadline above the learner's own (its rendezvous fails with the ranks named first).
        wait(learner.init_weight_sender.remote(workers, tp_sizes, backend, timeout_s), role="learner",
             call=f"init_weight_sender ({backend} group with {len(workers)} engines)", timeout_s=2 * timeout_s,
             setting=f"2 x {SETTING}")

    def push(self, version: int) -> float:
        start = time.perf_counter()
        # The learner's client waits on each engine with the same deadline and names a failing one; this
        # outer deadline also covers a broadcast stuck with no error (NCCL has no timeout of its own).
        wait(self.learner.send_weights.remote(), role="learner", call="send_weights", timeout_s=2 * self.timeout_s,
             setting=f"2 x {SETTING}")
        wait_engines([w.set_version.remote(version) for w in self.workers], self.workers, "set_version", self.timeout_s)
        return time.perf_counter() - start


class EngineGroupClient:
    """vLLM's `VLLMWeightSyncClient` protocol over several engines (Ray actors), each call with a deadline.

    vLLM's own `RayVLLMWeightSyncClient` gives every handle the same rank offset, which only fits one
    engine; here engine i's workers start at rank 1 + (tensor-parallel sizes of engines before i).
    """

    def __init__(self, workers: list[ray.actor.ActorHandle], tp_sizes: list[int], timeout_s: float) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self.offsets = [1 + sum(tp_sizes[:i]) for i in range(len(tp_sizes))]

    def _all(self, call: str, refs: list) -> None:
        wait_engines(refs, self.workers, call, self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        self._all("init_weight_transfer_engine", [
            w.init_weight_transfer_engine.remote(WeightTransferInitRequest(init_info={**init_info, "rank_offset": off}))
            for w, off in zip(self.workers, self.offsets)
        ])

    def start_weight_update(self) -> None:
        self._all("start_weight_update", [w.start_weight_update.remote() for w in self.workers])

    def update_weights(self, update_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        request = WeightTransferUpdateRequest(update_info=update_info)
        self._all("update_weights", [w.update_weights.remote(request) for w in self.workers])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", [w.finish_weight_update.remote() for w in self.workers])


# ---- learner side: functions of the model, called inside the learner process (rank 0 of its group) ----
def engine_dtype_source(weights: Callable[[], Iterable[tuple[str, torch.Tensor]]], dtype: torch.dtype):
    """A vLLM `WeightSource` of the weights the learner hands out (`weights()`: HF names and full tensors)
    cast to the engines' dtype (bf16 buckets on the wire for a bf16 run: half of fp32's bytes, and what the
    engine would cast to anyway)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class EngineDtypeSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(n, dtype, tuple(p.shape)) for n, p in weights()]

        def __iter__(self):
            for n, p in weights():
                yield n, p.detach().to(dtype)

    return EngineDtypeSource()


def open_weight_sender(weights: Callable[[], Iterable[tuple[str, torch.Tensor]]], workers: list,
                       tp_sizes: list[int], *, backend: str, dtype: torch.dtype, timeout_s: float):
    """Trainer side of the vLLM weight-transfer API: rank 0 of a group with every engine's workers."""
    address, port = ray.util.get_node_ip_address(), free_port()
    client = EngineGroupClient(workers, tp_sizes, timeout_s)
    source = engine_dtype_source(weights, dtype)
    world_size = 1 + sum(tp_sizes)
    if backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

        init = NCCLTrainerInitInfo(master_address=address, master_port=port, world_size=world_size, rank=0)
        return NCCLTrainerWeightTransferEngine.trainer_init(init, client=client, source=source)
    from rlvr.sync.gloo_transfer import GlooTrainerInitInfo, GlooTrainerWeightTransferEngine

    init = GlooTrainerInitInfo(master_address=address, master_port=port, world_size=world_size, rank=0,
                               timeout_s=timeout_s)
    return GlooTrainerWeightTransferEngine.trainer_init(init, client=client, source=source)


class Gathers(Protocol):
    def gather_weights(self) -> None:
        """Every rank joins the gather of the full weights onto rank 0."""
        ...


class GatherFirst:
    """A weight sync from a ZeRO-3 group: every rank joins the gather of the full weights onto rank 0
    (module by module), then the transport reads rank 0's copy."""

    def __init__(self, group: Gathers, sync: WeightSync) -> None:
        self.group, self.sync = group, sync

    def push(self, version: int) -> float:
        start = time.perf_counter()
        self.group.gather_weights()
        gathered = time.perf_counter() - start
        return gathered + self.sync.push(version)
