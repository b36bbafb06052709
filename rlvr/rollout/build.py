"""The rollout engines of a run, built from the config (placed by rlvr/runtime/placement.py's options).

train.max_staleness > 0: the asynchronous engine (rlvr/rollout/async_worker.py), which takes weight updates while it
generates; 0: the synchronous one, exactly as before."""

from __future__ import annotations

import ray

from rlvr.config import Config
from rlvr.rollout.async_worker import AsyncRolloutWorker
from rlvr.rollout.worker import RolloutWorker
from rlvr.sync.build import TRANSFER_BACKENDS, sync_kind


def build_rollout_workers(cfg: Config, model_path: str, options: list[dict]) -> list[ray.actor.ActorHandle]:
    r = cfg.rollout
    worker, extra = RolloutWorker, {}
    if cfg.train.max_staleness > 0:
        worker, extra = AsyncRolloutWorker, {"update_mode": r.update_mode}
    return [
        worker.options(**options[i]).remote(
            model_path,
            dtype=cfg.model.dtype,
            max_model_len=r.max_model_len,
            max_num_seqs=r.max_num_seqs,
            max_num_batched_tokens=r.max_num_batched_tokens,
            tensor_parallel=r.gpus_per_engine,
            gpu_memory_utilization=r.gpu_memory_utilization,
            cpu_kv_cache_gb=r.cpu_kv_cache_gb,
            enforce_eager=r.enforce_eager,
            weight_transfer=TRANSFER_BACKENDS.get(sync_kind(cfg), ""),
            prompt_template=cfg.data.prompt_template,
            system_prompt=cfg.data.system_prompt,
            seed=r.seed + i,
            engine_index=i,
            num_engines=r.num_engines,
            sleep_mode=cfg.cluster.placement == "colocated",
            **extra,
        )
        for i in range(r.num_engines)
    ]
