"""The weight sync of a run, chosen from the config (`rollout.weight_sync`)."""

from __future__ import annotations

from rlvr.config import Config
from rlvr.sync.transports import GatherFirst, ObjectStoreSync, SharedMemorySync, TransferSync, WeightSync

TRANSFER_BACKENDS = {"nccl": "nccl", "gloo": "rlvr_gloo"}  # rollout.weight_sync -> vLLM weight-transfer backend


def build_weight_sync(cfg: Config, learner, workers) -> WeightSync:
    """The weights go from the group's rank 0 (under ZeRO-3 every rank first joins their gather)."""
    kind, timeout_s, source = sync_kind(cfg), cfg.rollout.sync_timeout_s, learner.rank0
    if kind in TRANSFER_BACKENDS:
        tp_sizes = [max(1, cfg.rollout.gpus_per_engine)] * len(workers)  # a CPU engine has one worker
        sync = TransferSync(source, workers, tp_sizes, TRANSFER_BACKENDS[kind], timeout_s)
    elif kind == "shared_memory":
        sync = SharedMemorySync(source, workers, timeout_s)
    else:
        sync = ObjectStoreSync(source, workers, timeout_s)
    return GatherFirst(learner, sync) if learner.gather_for_sync else sync


def sync_kind(cfg: Config) -> str:
    if cfg.rollout.weight_sync != "auto":
        return cfg.rollout.weight_sync
    return "nccl" if cfg.rollout.gpus_per_engine > 0 else "shared_memory"
