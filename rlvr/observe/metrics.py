"""Run outputs: DIR/metrics.jsonl (one JSON object per RL step), the trackers (rlvr/observe/trackers.py), a console progress bar."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rlvr.observe.trackers import Tracker
from rlvr.types import ScoredRollout


class MetricsLogger:
    def __init__(self, out_dir: Path, total_steps: int, trackers: Sequence[Tracker] = (),
                 console: Console | None = None, start_step: int = 0) -> None:
        """`start_step`: the first step this run logs; earlier records of metrics.jsonl are kept, later ones
        (logged after the checkpoint a resumed run starts from) dropped, so no step appears twice or is missing."""
        self.path = out_dir / "metrics.jsonl"
        keep_steps_before(self.path, start_step)
        self.file = self.path.open("a")
        self.console = console or Console(stderr=True)
        self.trackers = list(trackers)  # TensorBoard, Ray metrics, W&B (rlvr/observe/trackers.py)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task("RL", total=total_steps, info="")
        self.done, self.total, self.description = 0, total_steps, "RL"

    def stage(self, description: str, total: int) -> None:
        """Reuse the bar for another stage (SFT, evaluation)."""
        self.progress.reset(self.task, total=total, description=description, info="")
        self.done, self.total, self.description = 0, total, description

    def advance(self, info: str = "", steps: int = 1) -> None:
        self.progress.update(self.task, advance=steps, info=info)
        before, self.done = self.done, self.done + steps
        # Without a terminal (CI, `> log`) the bar is not drawn: print a line every tenth of the stage.
        if not self.console.is_terminal and (before * 10 // max(self.total, 1)) != (self.done * 10 // max(self.total, 1)):
            self.console.print(f"{self.description} {self.done}/{self.total} {info}", highlight=False)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in sorted(metrics.items())}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for tracker in self.trackers:
            tracker.log(step, metrics)
        timeouts = {k.split("/")[1]: int(v) for k, v in metrics.items() if _is_timeout_count(k) and v}
        if timeouts:  # scored reward.timeout_value (0 by default): said out loud, never a silent 0
            counts = ", ".join(f"{label} {n}" for label, n in timeouts.items())
            self.print(f"step {step}: reward calls timed out ({counts}); scored reward.timeout_value")
        self.advance(
            f"reward {metrics.get('reward/mean', float('nan')):.3f}  len {metrics.get('response_length/mean', 0):.1f}"
            f"  {metrics.get('timing/step_s', 0):.2f}s/step" + "".join(f"  {k}" for k in reward_failure_counts(metrics))
        )

    def print(self, message: str) -> None:
        self.console.print(message)

    def close(self) -> None:
        self.progress.stop()
        self.file.close()
        for tracker in self.trackers:
            tracker.close()


def keep_steps_before(path: Path, start_step: int) -> int:
    """Rewrite `path` (atomically) with only its records of steps < start_step; returns how many were dropped.

    A run killed after logging step 4 whose newest checkpoint is step 3 resumes at 3: the records of
    steps 3 and 4 go, as does a line torn by the kill.
    """
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partial last line
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] < start_step:
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return len(lines) - len(kept)


def rollout_metrics(scored_PG: list[list[ScoredRollout]], step: int = 0) -> dict[str, float]:
    """Shape of the generated text: lengths, truncation, token counts; staleness (steps behind `step`'s weights)."""
    flat = [s for group in scored_PG for s in group]
    lengths = [s.rollout.num_tokens for s in flat]
    stale = [step - s.rollout.policy_version for s in flat]
    return {
        "staleness/mean": statistics.fmean(stale),
        "staleness/max": float(max(stale)),
        "response_length/mean": statistics.fmean(lengths),
        "response_length/max": float(max(lengths)),
        "response_length/clip_ratio": sum(s.rollout.finish_reason == "length" for s in flat) / len(flat),
        "tokens/prompt": float(sum(len(s.rollout.prompt_ids) for s in flat)),
        "tokens/completion": float(sum(lengths)),
    }


def reward_failure_counts(metrics: dict[str, float]) -> list[str]:
    """The non-zero reward/<term>/{errors,timeouts,crashes} of a step, as "math errors 3"."""
    return [
        f"{key[len('reward/'):].rpartition('/')[0]} {key.rpartition('/')[2]} {int(value)}"
        for key, value in sorted(metrics.items())
        if key.startswith("reward/") and key.endswith(("/errors", "/timeouts", "/crashes")) and value
    ]


def failure_totals(totals: Mapping[str, Any], step_metrics: Mapping[str, float]) -> dict[str, int]:
    """`totals` (summary.json's reward/failed and reward/<term>/{errors,timeouts,crashes} over the run so far)
    plus the step's."""
    keys = [k for k in step_metrics
            if k == "reward/failed" or k.startswith("reward/") and k.endswith(("/errors", "/timeouts", "/crashes"))]
    return {k: int(totals.get(k, 0)) + int(step_metrics[k]) for k in keys}


def _is_timeout_count(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "reward" and parts[2] == "timeouts"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value
