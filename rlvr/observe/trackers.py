"""Where a step's metrics go besides metrics.jsonl: TensorBoard, Ray's metrics (Prometheus), Weights & Biases.

    trackers = build_trackers(("tensorboard", "ray"), out_dir, run_config)   # train.loggers
    for t in trackers: t.log(step, metrics)

Each tracker is a small class with `log(step, metrics)` and `close()`; which ones run is settled here,
when the run is built, so MetricsLogger just fans out.

Ray: every numeric metric becomes a `ray.util.metrics.Gauge` named `rlvr_` + the metrics.jsonl key with
every character Prometheus does not allow (`/`, `.`, `@`, `%`, ...) replaced by `_`
(`reward/mean` -> `rlvr_reward_mean`, `timing/step_s` -> `rlvr_timing_step_s`). Ray's reporter agent
serves them at the node's Prometheus endpoint (`cluster.metrics_export_port`) with its own `ray_`
prefix, and the dashboard's Metrics view and Grafana (`docs/grafana/rlvr.json`) read them from there.
A gauge keeps its last value until the next step sets it: Prometheus scrapes a step's numbers, not an
average.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


class Tracker(Protocol):
    def log(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def prometheus_name(key: str) -> str:
    """`rlvr_` + the key with characters outside [a-zA-Z0-9_:] replaced by `_` (eval/pass@4 -> rlvr_eval_pass_4)."""
    return "rlvr_" + _INVALID.sub("_", key)


class TensorBoard:
    def __init__(self, out_dir: Path, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run: events of steps >= start_step (logged after its checkpoint) are purged, not doubled.
        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step or None)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if _number(value):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class RayMetrics:
    """One Ray Gauge per metric key, created on first sight (eval keys appear only every eval.every steps)."""

    def __init__(self) -> None:
        self.gauges: dict[str, Any] = {}

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        from ray.util.metrics import Gauge

        for key, value in {"step": step, **metrics}.items():
            if not _number(value):
                continue
            if key not in self.gauges:
                self.gauges[key] = Gauge(prometheus_name(key), description=f"rlvr metrics.jsonl key {key!r}")
            self.gauges[key].set(float(value))

    def close(self) -> None:
        pass  # Ray's agent keeps serving the last values until the cluster stops


class WandB:
    """Weights & Biases; `WANDB_MODE=offline` writes to out_dir/wandb without any network."""

    def __init__(self, out_dir: Path, run_config: Mapping[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project="rlvr", name=out_dir.name, dir=str(out_dir), config=dict(run_config))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if _number(v)}, step=step, commit=True)  # not held until step + 1

    def close(self) -> None:
        self.run.finish()


def build_trackers(names: Sequence[str], out_dir: Path, run_config: Mapping[str, Any], start_step: int = 0
                   ) -> list[Tracker]:
    built: dict[str, Any] = {"tensorboard": lambda: TensorBoard(out_dir, start_step), "ray": RayMetrics,
                             "wandb": lambda: WandB(out_dir, run_config)}
    return [built[name]() for name in names]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
