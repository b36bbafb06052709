"""How a run opens, before its first RL step: afresh (SFT if configured, then the greedy evaluation before RL)
or from a checkpoint (its state restored, the engines given its weights). Chosen before Ray starts.

    opening = choose_opening(ckpt.latest(config) if resume else None, cfg, splits, eval_tokens, correctness)
    ... start Ray, build the components ...
    progress = opening.open(Components(learner, stage, workers, ...), summary, logger)
    ... each RL step: progress.rewards_per_step.append(...); ckpt.save(step, parts, progress.records()) ...
    summary = progress.final(after, wall_s)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rlvr.config import Config
from rlvr.data.sources import Splits
from rlvr.evaluate.greedy import evaluate, first_last_mean
from rlvr.learner.optim import OptimSpec
from rlvr.observe.metrics import MetricsLogger
from rlvr.runtime.checkpoint import write_json_atomic
from rlvr.runtime.placement import Placement, engines_asleep
from rlvr.runtime.resume import Parts, Resumed
from rlvr.scoring.correctness import Correctness

SFT_CHUNK = 50  # at most this many SFT steps per learner call, and at most a tenth of them: the bar moves


@dataclasses.dataclass(frozen=True)
class Components:
    """What an opening works on: the run's built components."""

    learner: Any  # LearnerGroup
    stage: Any  # the advantage stage (rlvr/learner/build.py)
    workers: Sequence[Any]  # RolloutWorker handles
    reward_service: Any
    weight_sync: Any
    plan: Placement
    parts: Parts


@dataclasses.dataclass
class Progress:
    """What the loop carries from step to step and a checkpoint keeps: the summary so far, the greedy
    evaluation before RL, and each RL step's mean reward."""

    summary: dict
    before: dict
    rewards_per_step: list[float] = dataclasses.field(default_factory=list)
    held_out: int = 0  # prompts of the greedy evaluations

    def records(self) -> dict[str, Any]:
        return {"summary": self.summary, "before": self.before, "rewards_per_step": self.rewards_per_step}

    def final(self, after: Mapping[str, Any], wall_s: float) -> dict:
        """summary.json: the summary so far, the evaluations before and after RL, the reward's first and last steps."""
        first, last = first_last_mean(self.rewards_per_step) if self.rewards_per_step else (None, None)
        return self.summary | {
            "eval/accuracy_before_rl": self.before["eval/accuracy"],
            "eval/accuracy_after_rl": after["eval/accuracy"],
            "eval/prompts": self.held_out,
            "reward/first10_mean": first,
            "reward/last10_mean": last,
            "rl_steps": len(self.rewards_per_step),
            "wall_s": wall_s,
        }


class Opening(Protocol):
    step: int  # the first RL step to run

    def open(self, c: Components, summary: dict, logger: MetricsLogger) -> Progress: ...


@dataclasses.dataclass(frozen=True)
class Afresh:
    """SFT (if configured), then the learner's RL state and the greedy evaluation before RL."""

    cfg: Config
    splits: Splits
    eval_tokens: int
    correctness: Correctness
    step: int = 0

    def open(self, c: Components, summary: dict, logger: MetricsLogger) -> Progress:
        cfg, held_out = self.cfg, self.splits.held_out
        if cfg.sft.steps:
            with engines_asleep(c.workers, c.plan, cfg.cluster.call_timeout_s):
                summary |= cold_start(cfg, c.learner, self.splits.sft, logger)
            c.weight_sync.push(version=0)
        c.learner.start_rl()
        c.stage.prepare(c.learner)
        logger.print(f"evaluating {len(held_out)} held-out prompts (greedy)")
        before = evaluate(c.workers, c.reward_service, held_out, self.eval_tokens, self.correctness)
        logger.print(f"held-out greedy accuracy before RL: {before['eval/accuracy']:.3f} ({len(held_out)} prompts)")
        return Progress(summary, before, held_out=len(held_out))


@dataclasses.dataclass(frozen=True)
class FromCheckpoint:
    """Every part's state from the newest complete checkpoint; SFT and the evaluation before RL are skipped."""

    checkpoint: Resumed
    held_out: int

    @property
    def step(self) -> int:
        return self.checkpoint.step

    def open(self, c: Components, summary: dict, logger: MetricsLogger) -> Progress:
        logger.print(f"resuming at step {self.step} from {self.checkpoint.path}: SFT and the evaluation before RL "
                     "are skipped")
        records = self.checkpoint.restore(c.parts)
        c.weight_sync.push(version=self.step)
        return Progress(summary | records["summary"], records["before"], records["rewards_per_step"], self.held_out)


def choose_opening(resumed: Resumed | None, cfg: Config, splits: Splits, eval_tokens: int,
                   correctness: Correctness) -> Opening:
    """From the checkpoint `Checkpoints.latest` found (--resume), else afresh."""
    if resumed is not None:
        return FromCheckpoint(resumed, len(splits.held_out))
    return Afresh(cfg, splits, eval_tokens, correctness)


def sft_chunk(steps: int) -> int:
    """SFT steps per learner call: the bar advances at least every tenth of the stage (every call returns to
    the driver, so short runs keep to ten calls) and at least every SFT_CHUNK steps."""
    return max(1, min(SFT_CHUNK, steps // 10))


def cold_start(cfg: Config, learner, samples, logger: MetricsLogger) -> dict:
    """Supervised steps on (prompt, answer) pairs: a tiny random model has no reward signal without them."""
    s = cfg.sft
    optim = OptimSpec(lr=s.lr, warmup_steps=s.warmup_steps, decay_steps=max(0, s.steps - s.warmup_steps),
                      grad_clip=cfg.learner.grad_clip)
    learner.start_sft(
        samples, batch_size=s.batch_size, prompt_template=cfg.data.prompt_template,
        system_prompt=cfg.data.system_prompt, response_template=s.response_template, optim=optim, seed=s.seed,
    )
    logger.stage("SFT", s.steps)
    start, metrics = time.perf_counter(), {}
    chunk = sft_chunk(s.steps)
    for done in range(0, s.steps, chunk):
        n = min(chunk, s.steps - done)
        metrics = learner.sft_steps(n)
        logger.advance(f"loss {metrics['sft/loss']:.3f}", steps=n)
    write_json_atomic(Path(logger.path).parent / "sft.json", metrics)
    return {"sft/final_loss": metrics.get("sft/loss"), "sft/wall_s": time.perf_counter() - start}
