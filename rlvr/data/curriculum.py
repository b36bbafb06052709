r"""Per-prompt pass rates, kept by the driver, and a curriculum over the training prompts that reads them.

    tracker = build_tracker(cfg.curriculum, judge)      # judge: rlvr/scoring/correctness.py
    prompts = build_prompt_source(cfg.curriculum, splits.train, batch_size=16, seed=0, tracker=tracker)
    metrics = tracker.update(scored_PG)                  # every scored group, once per step

One owner: the driver sees every scored group, so it keeps the tracker, hands the reward service the
pass rates that difficulty-aware shapers read (LASER-D, rewards/laser.py), and saves the state with the
run (DIR/curriculum_state.json).

Pass rate. A group's pass rate is its fraction of correct answers; a prompt's tracked rate is an
exponential moving average over the steps it appeared in, r <- decay * r + (1 - decay) * r_group (the
first appearance sets r = r_group), as LASER-D tracks difficulty (Liu et al. 2025, arXiv 2505.15612,
Sec. 4).

Curriculum (`curriculum.mode = "pass_rate"`). Each batch is P prompts drawn without replacement, prompt
i with weight

    w_i = exp(-((r_i - target) / width)^2)          r_i: tracked rate, `prior` for a prompt not yet seen

(weighted sampling by Efraimidis & Spirakis's keys u^(1/w)), so prompts near the target difficulty
come back and those far from it rarely do: the zone of proximal development that DAPO's dynamic
sampling reaches by filtering after the fact (Yu et al. 2025, arXiv 2503.14476, Sec. 3.2) is aimed
at before generation. A prompt whose groups were all correct (or all wrong) in its last `retire_after`
appearances is retired: never drawn again, and counted in curriculum/retired_{solved,unsolved}.
Deviations from curriculum papers: no difficulty schedule over training (the target is fixed), and
weights are recomputed from the tracker every step rather than from an offline difficulty estimate.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.config import CurriculumConfig
from rlvr.data.sources import DataError, PromptSource, PromptStream
from rlvr.scoring.correctness import Correctness
from rlvr.types import Sample, ScoredRollout


class PassRateTracker:
    """Each prompt's pass rate (EMA over its appearances) and its run of all-correct / all-wrong groups."""

    def __init__(self, judge: Correctness, decay: float = 0.5, retire_after: int = 0) -> None:
        self.judge, self.decay, self.retire_after = judge, decay, retire_after
        self.rates: dict[str, float] = {}  # sample id -> tracked pass rate; handed to the reward service
        self.seen: dict[str, int] = {}  # sample id -> groups scored
        self.streaks: dict[str, tuple[int, int]] = {}  # sample id -> (all-correct run, all-wrong run)
        self.retired: dict[str, str] = {}  # sample id -> "solved" | "unsolved"

    def update(self, groups_PG: Sequence[Sequence[ScoredRollout]]) -> dict[str, float]:
        """Fold one step's scored groups in; returns the curriculum metrics."""
        updated = []
        for group in groups_PG:
            rate = self.judge.pass_rate(group)
            if not group or math.isnan(rate):
                continue  # no rollout's correctness is known: nothing to learn about the prompt
            key = group[0].rollout.sample.id
            old = self.rates.get(key)
            self.rates[key] = rate if old is None else self.decay * old + (1 - self.decay) * rate
            self.seen[key] = self.seen.get(key, 0) + 1
            solved, unsolved = self.streaks.get(key, (0, 0))
            solved, unsolved = (solved + 1 if rate == 1.0 else 0), (unsolved + 1 if rate == 0.0 else 0)
            self.streaks[key] = (solved, unsolved)
            if self.retire_after and key not in self.retired and max(solved, unsolved) >= self.retire_after:
                self.retired[key] = "solved" if solved >= self.retire_after else "unsolved"
            updated.append(self.rates[key])
        return self.metrics(updated)

    def metrics(self, step_rates: Sequence[float] = ()) -> dict[str, float]:
        """curriculum/mean_pass_rate: mean tracked rate of this step's prompts; retired and tracked counts."""
        kinds = list(self.retired.values())
        return {
            "curriculum/mean_pass_rate": statistics.fmean(step_rates) if step_rates else math.nan,
            "curriculum/tracked_prompts": float(len(self.rates)),
            "curriculum/retired_solved": float(kinds.count("solved")),
            "curriculum/retired_unsolved": float(kinds.count("unsolved")),
        }

    def state(self) -> dict[str, Any]:
        return {
            "rates": dict(self.rates), "seen": dict(self.seen),
            "streaks": {k: list(v) for k, v in self.streaks.items()}, "retired": dict(self.retired),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.rates.clear()  # in place: the sampler's draw holds this dict
        self.rates.update({k: float(v) for k, v in state["rates"].items()})
        self.seen = {k: int(v) for k, v in state["seen"].items()}
        self.streaks = {k: (int(v[0]), int(v[1])) for k, v in state["streaks"].items()}
        self.retired = dict(state["retired"])


class PassRateCurriculum:
    """Endless batches of P prompts favouring tracked pass rates near `target`; retired prompts are skipped."""

    def __init__(
        self,
        samples: Sequence[Sample],
        batch_size: int,
        tracker: PassRateTracker,
        *,
        target: float = 0.5,
        width: float = 0.25,
        prior: float = 0.5,
        seed: int = 0,
    ) -> None:
        if batch_size > len(samples):
            raise DataError(f"data.batch_size {batch_size} exceeds the {len(samples)} training prompts")
        self.samples, self.batch_size, self.tracker = list(samples), batch_size, tracker
        self.target, self.width, self.prior, self.seed = target, width, prior, seed
        self.draws = 0

    def weight(self, sample_id: str) -> float:
        rate = self.tracker.rates.get(sample_id, self.prior)
        return math.exp(-(((rate - self.target) / self.width) ** 2))

    def __iter__(self) -> PassRateCurriculum:
        return self

    def __next__(self) -> list[Sample]:
        active = [s for s in self.samples if s.id not in self.tracker.retired]
        if len(active) < self.batch_size:
            raise DataError(
                f"the curriculum retired all but {len(active)} of {len(self.samples)} training prompts, fewer than "
                f"data.batch_size {self.batch_size}: raise curriculum.retire_after or data.train_size"
            )
        rng = random.Random(self.seed * 1_000_003 + self.draws)  # one stream per draw: resumable from `draws`
        self.draws += 1
        # Efraimidis-Spirakis: the P largest keys log(u) / w are a weighted sample without replacement.
        keys = [math.log(1.0 - rng.random()) / max(self.weight(s.id), 1e-300) for s in active]
        return [active[i] for i in heapq.nlargest(self.batch_size, range(len(active)), key=keys.__getitem__)]

    @property
    def state(self) -> dict[str, int]:
        return {"draws": self.draws}

    def restore(self, state: Mapping[str, int]) -> None:
        self.draws = int(state["draws"])


def build_tracker(cfg: CurriculumConfig, judge: Correctness) -> PassRateTracker:
    """Always built (LASER-D reads it; the run saves it); it retires prompts only when a curriculum uses it."""
    return PassRateTracker(judge, decay=cfg.decay, retire_after=cfg.retire_after if cfg.mode == "pass_rate" else 0)


def build_prompt_source(
    cfg: CurriculumConfig, samples: Sequence[Sample], batch_size: int, seed: int, tracker: PassRateTracker
) -> PromptSource:
    if cfg.mode == "pass_rate":
        return PassRateCurriculum(samples, batch_size, tracker, target=cfg.target, width=cfg.width,
                                  prior=cfg.prior, seed=seed)
    return PromptStream(list(samples), batch_size, seed=seed)


def curriculum_state(tracker: PassRateTracker, prompts: PromptSource) -> dict[str, Any]:
    """What DIR/curriculum_state.json holds: the tracker and the prompt source's position."""
    return {"tracker": tracker.state(), "prompts": dict(prompts.state)}
