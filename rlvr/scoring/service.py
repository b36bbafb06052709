"""Scoring: per-rollout reward terms in an isolated process pool, then group shaping, then the weighted sum.

    handle = build_reward_service(cfg.reward)                 # a Ray actor wrapping a Scorer
    scored_G = ray.get(handle.score_group.remote(rollouts_G))  # one group, scored as soon as it arrives
    metrics = reward_metrics(scored_PG, max_failed_frac=0.5)  # one RL step; raises if over half got no reward

    with Scorer(cfg.reward.terms, workers=2, timeout_s=10) as scorer:   # the same, without Ray
        scored_G = scorer.score_group(rollouts_G)

For each group: every per-rollout term runs on every rollout in the pool (rewards/pool.py: a hard
wall-clock deadline per call that kills the call's process, dead workers replaced); then each group
shaper gets the group and the correctness channel (the `correctness` term's values, NaN where it
failed), and a shaper that reads difficulty (`reads_pass_rate`, e.g. LASER-D) also the driver's
tracked pass rate of the group's prompt (`pass_rates`, rlvr/data/curriculum.py) and whether it may update
its state (`update_state=False` for held-out evaluation); then reward = sum of weight * value over
the terms with a non-zero weight. A term that raised or crashed makes the reward NaN, never 0; the
training loop masks such rollouts out and `reward_metrics` counts them per term. A term that timed
out scores `timeout_value` (the training config's default is 0.0, as in verl and TRL, so a completion
that hangs its verifier keeps its negative advantage; NaN voids it like a crash) and is counted as a
timeout either way. Group shapers run in this process (they are cheap arithmetic and may keep state
across steps, such as LASER-D's length windows), serialised by a lock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import ray

from rlvr.config import RewardConfig, RewardTermConfig
from rlvr.rewards import registry
from rlvr.rewards.pool import DeadlinePool, Outcome
from rlvr.runtime.remote import wait
from rlvr.scoring.correctness import correctness_label, term_label
from rlvr.types import Rollout, ScoredRollout, TermResult

Rates = Mapping[str, float] | None  # sample id -> pass rate tracked by the driver (rlvr/data/curriculum.py)


class RewardError(RuntimeError):
    """Too many rewards of a step failed (`reward.max_failed_frac`): the update would train on what is left."""


@dataclasses.dataclass(frozen=True)
class Term:
    label: str
    fn: Callable[..., Any]
    weight: float
    group: bool  # a group shaper: (rollouts_G, correct_G) -> values_G
    reads_pass_rate: bool = False  # ... that also takes pass_rate= and update= (rewards/protocol.py)


def build_terms(configs: Sequence[RewardTermConfig]) -> tuple[Term, ...]:
    terms = []
    for cfg in configs:
        label = term_label(cfg)
        if "/" in label or label in {t.label for t in terms}:
            raise ValueError(f"reward term label {label!r} is duplicated or contains '/'; set a distinct `label`")
        fn = registry.resolve(cfg.name, cfg.kwargs)
        terms.append(Term(label, fn, cfg.weight, registry.is_group_reward(fn), getattr(fn, "reads_pass_rate", False)))
    if not terms:
        raise ValueError("no reward terms configured")
    return tuple(terms)


class Scorer:
    """Scores groups of rollouts with the configured terms; usable from any thread or event loop."""

    def __init__(
        self,
        terms: Sequence[RewardTermConfig],
        *,
        workers: int = 2,
        timeout_s: float = 10.0,
        correctness: str = "",
        max_chunk: int = 64,
        memory_mb: int = 0,
        recycle_after: int = 0,
        timeout_value: float = math.nan,  # NaN: a timeout voids the reward (RewardConfig's default is 0.0)
    ) -> None:
        self.terms = build_terms(terms)
        self.timeout_value = timeout_value
        self._per_rollout = [t for t in self.terms if not t.group]
        self._group = [t for t in self.terms if t.group]
        labels = [t.label for t in self._per_rollout]
        self.correctness = correctness_label(terms, correctness) if labels else correctness
        if self._group and self.correctness not in labels:
            raise ValueError(f"correctness term {self.correctness!r} is not a per-rollout term (have {labels})")
        self._pool = DeadlinePool([t.fn for t in self._per_rollout], workers=workers, timeout_s=timeout_s,
                                  max_chunk=max_chunk, memory_mb=memory_mb, recycle_after=recycle_after)
        self._group_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> Scorer:
        return cls(cfg.terms, workers=cfg.workers, timeout_s=cfg.timeout_s, correctness=cfg.correctness,
                   memory_mb=cfg.worker_memory_mb, recycle_after=cfg.recycle_after, timeout_value=cfg.timeout_value)

    # pass_rates: sample id -> the driver's tracked pass rate; update_state=False: shapers keep their state.
    def score_group(self, rollouts_G: Sequence[Rollout], pass_rates: Rates = None, update_state: bool = True
                    ) -> list[ScoredRollout]:
        return self._finish(rollouts_G, self._submit(rollouts_G).result(), pass_rates, update_state)

    async def score_group_async(self, rollouts_G: Sequence[Rollout], pass_rates: Rates = None,
                                update_state: bool = True) -> list[ScoredRollout]:
        outcomes = await asyncio.wrap_future(self._submit(rollouts_G))
        return self._finish(rollouts_G, outcomes, pass_rates, update_state)

    def score_groups(self, groups_PG: Sequence[Sequence[Rollout]], pass_rates: Rates = None,
                     update_state: bool = True) -> list[list[ScoredRollout]]:
        """Several groups in one submission (cheaper per rollout than one score_group call each)."""
        outcomes = self._submit([r for g in groups_PG for r in g]).result()
        return self._split(groups_PG, outcomes, pass_rates, update_state)

    async def score_groups_async(self, groups_PG: Sequence[Sequence[Rollout]], pass_rates: Rates = None,
                                 update_state: bool = True) -> list[list[ScoredRollout]]:
        outcomes = await asyncio.wrap_future(self._submit([r for g in groups_PG for r in g]))
        return self._split(groups_PG, outcomes, pass_rates, update_state)

    def _split(self, groups_PG: Sequence[Sequence[Rollout]], outcomes: Sequence[Outcome], pass_rates: Rates,
               update_state: bool) -> list[list[ScoredRollout]]:
        scored_PG, start = [], 0
        for group in groups_PG:
            end = start + len(group) * len(self._per_rollout)
            scored_PG.append(self._finish(group, outcomes[start:end], pass_rates, update_state))
            start = end
        return scored_PG

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until the worker processes have started; scoring works without it (calls queue)."""
        return self._pool.wait_ready(timeout_s)

    def shaper_state(self) -> dict[str, Any]:
        """label -> state of every group shaper that keeps one (a `state()` method, e.g. LASER-D's length
        windows), JSON-friendly, for a resumable checkpoint (rlvr/runtime/resume.py)."""
        with self._group_lock:
            return {t.label: t.fn.state() for t in self._group if callable(getattr(t.fn, "state", None))}

    def set_shaper_state(self, state: Mapping[str, Any]) -> None:
        """Restore `shaper_state()`'s result; a stateful shaper missing from it (or the reverse) is an error."""
        with self._group_lock:
            stateful = {t.label: t.fn for t in self._group if callable(getattr(t.fn, "state", None))}
            if set(stateful) != set(state):
                raise ValueError(f"reward shaper state for {sorted(state)}, but the stateful shapers are {sorted(stateful)}")
            for label, fn in stateful.items():
                fn.restore(state[label])

    def stats(self) -> dict[str, int]:
        """Pool counters: workers_started, workers_replaced, workers_recycled, timeouts, crashes."""
        return dict(self._pool.stats)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, rollouts_G: Sequence[Rollout]) -> Future:
        calls = [(t, slim) for slim in map(_slim, rollouts_G) for t in range(len(self._per_rollout))]
        return self._pool.submit(calls)

    def _finish(self, rollouts_G: Sequence[Rollout], outcomes: Sequence[Outcome], pass_rates: Rates = None,
                update_state: bool = True) -> list[ScoredRollout]:
        n = len(self._per_rollout)
        terms_G: list[dict[str, TermResult]] = [{} for _ in rollouts_G]
        for i in range(len(rollouts_G)):
            for t, term in enumerate(self._per_rollout):
                status, value, parts, error, seconds = outcomes[i * n + t]
                if status == "timeout":
                    value = self.timeout_value
                terms_G[i][term.label] = TermResult(value, status, error, seconds)  # type: ignore[arg-type]
                for part, part_value in parts.items():
                    terms_G[i][f"{term.label}/{part}"] = TermResult(part_value)
        if self._group:
            correct_G = [terms[self.correctness].value for terms in terms_G]
            context = {"pass_rate": (pass_rates or {}).get(rollouts_G[0].sample.id), "update": update_state}
            with self._group_lock:
                for term in self._group:
                    shaped = _shape(term, rollouts_G, correct_G, self.correctness, context)
                    for terms, result in zip(terms_G, shaped):
                        terms[term.label] = result
        return [
            ScoredRollout(rollout, _weighted_sum(self.terms, terms), terms)
            for rollout, terms in zip(rollouts_G, terms_G)
        ]


def _slim(rollout: Rollout) -> Rollout:
    """The worker's copy: rewards need no prompt ids or log-probs, and they dominate the pickle."""
    if rollout.prompt_ids or rollout.sampler_logprobs:
        return dataclasses.replace(rollout, prompt_ids=(), sampler_logprobs=())
    return rollout


def _shape(term: Term, rollouts_G: Sequence[Rollout], correct_G: list[float], correctness: str,
           context: dict[str, Any]) -> list[TermResult]:
    start = time.perf_counter()
    try:
        values = term.fn(rollouts_G, correct_G, **context) if term.reads_pass_rate else term.fn(rollouts_G, correct_G)
        values_G = [float(v) for v in values]
        if len(values_G) != len(rollouts_G):
            raise ValueError(f"returned {len(values_G)} values for a group of {len(rollouts_G)}")
    except Exception as e:  # a group shaper's bug fails its term for the group, loudly, not the service
        error = f"{type(e).__name__}: {e}"
        return [TermResult(math.nan, "error", error, time.perf_counter() - start)] * len(rollouts_G)
    seconds = time.perf_counter() - start  # one call for the whole group
    return [
        TermResult(v, seconds=seconds)
        if not math.isnan(v)
        else TermResult(math.nan, "error", f"no value: correctness term {correctness!r} failed" if math.isnan(c)
                        else "group shaper returned NaN", seconds)
        for v, c in zip(values_G, correct_G)
    ]


def _weighted_sum(terms: Sequence[Term], results: dict[str, TermResult]) -> float:
    total = 0.0
    for term in terms:
        if term.weight == 0:
            continue
        result = results[term.label]
        if result.status in ("error", "crash") or math.isnan(result.value):
            return math.nan
        total += term.weight * result.value
    return total


def reward_metrics(scored_PG: Sequence[Sequence[ScoredRollout]], max_failed_frac: float = 1.0) -> dict[str, float]:
    """Reward and per-term statistics of one RL step.

    reward/mean, reward/std (over rollouts with a reward), reward/failed (count without one),
    reward/zero_std_groups (fraction of groups whose rewards are all equal: no GRPO signal), and per
    term reward/<label>/mean (over ok calls), .../timeouts, .../errors, .../crashes (counts).
    Raises RewardError when the share of rollouts without a reward exceeds `max_failed_frac`, or is 1.
    """
    flat = [s for group in scored_PG for s in group]
    if not flat:
        return {}
    rewards = [s.reward for s in flat if s.ok]
    failed = len(flat) - len(rewards)
    if not rewards or failed / len(flat) > max_failed_frac:
        raise RewardError(f"{failed} of {len(flat)} rollouts of the step ({failed / len(flat):.1%}) got no reward "
                          f"(reward.max_failed_frac = {max_failed_frac:g}): {failure_summary(flat)}")
    groups = [[s.reward for s in g if s.ok] for g in scored_PG if g]
    metrics = {
        "reward/mean": statistics.fmean(rewards),
        "reward/std": statistics.pstdev(rewards),
        "reward/failed": float(failed),
        "reward/zero_std_groups": sum(len(set(g)) <= 1 for g in groups) / len(groups),
    }
    labels = dict.fromkeys(label for s in flat for label in s.terms)
    for label in labels:
        results = [s.terms[label] for s in flat if label in s.terms]
        values = [r.value for r in results if r.status == "ok"]
        metrics[f"reward/{label}/mean"] = statistics.fmean(values) if values else math.nan
        if "/" in label:
            continue  # a sub-term of a reward: its failures and time are its parent's
        seconds = [r.seconds for r in results]
        # Per-call time in the worker: which term is slow, and whether one call nears reward.timeout_s.
        metrics[f"reward/{label}/call_s_mean"] = statistics.fmean(seconds)
        metrics[f"reward/{label}/call_s_max"] = max(seconds)
        for status, key in (("timeout", "timeouts"), ("error", "errors"), ("crash", "crashes")):
            metrics[f"reward/{label}/{key}"] = float(sum(r.status == status for r in results))
    return metrics


def failure_summary(flat: Sequence[ScoredRollout]) -> str:
    """Which terms voided rewards how often, with the first message: "term 'math' error on 32/32 (ValueError: boom)".

    Only the failures that void a reward count (an error, a crash, a timeout scoring NaN), on the rollouts left
    without one: a timeout scoring `reward.timeout_value` = 0.0 is a result, not the fault.
    """
    first: dict[tuple[str, str], str] = {}
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for s in flat:
        if s.ok:
            continue
        for label, result in s.terms.items():
            if result.status != "ok" and math.isnan(result.value) and "/" not in label:
                counts[label, result.status] += 1
                first.setdefault((label, result.status), result.error)
    if not counts:
        return "no term failed, yet no reward is finite"
    return "; ".join(f"term {label!r} {status} on {n}/{len(flat)} ({first[label, status]})"
                     for (label, status), n in counts.items())


@ray.remote(num_cpus=0)  # its worker processes do the CPU work; reserving a core here would starve tiny clusters
class RewardService:
    """The Scorer as a Ray actor. Async, so many groups are scored concurrently as they arrive."""

    def __init__(self, cfg: RewardConfig) -> None:
        self._scorer = Scorer.from_config(cfg)

    async def score_group(self, rollouts_G: Sequence[Rollout], pass_rates: Rates = None,
                          update_state: bool = True) -> list[ScoredRollout]:
        return await self._scorer.score_group_async(rollouts_G, pass_rates, update_state)

    async def score_groups(self, groups_PG: Sequence[Sequence[Rollout]], pass_rates: Rates = None,
                           update_state: bool = True) -> list[list[ScoredRollout]]:
        """The groups that finished together (one engine step), in one submission to the pool."""
        return await self._scorer.score_groups_async(groups_PG, pass_rates, update_state)

    async def stats(self) -> dict[str, int]:
        return self._scorer.stats()

    async def shaper_state(self) -> dict[str, Any]:
        return self._scorer.shaper_state()

    async def set_shaper_state(self, state: Mapping[str, Any]) -> None:
        self._scorer.set_shaper_state(state)

    async def close(self) -> None:
        self._scorer.close()


class ShaperStates:
    """A RewardService actor's group-shaper state for a resumable checkpoint (rlvr/runtime/resume.py), the
    same two methods as `Scorer`'s, each call with a deadline."""

    def __init__(self, service: ray.actor.ActorHandle, timeout_s: float) -> None:
        self.service, self.timeout_s = service, timeout_s

    def shaper_state(self) -> dict[str, Any]:
        return wait(self.service.shaper_state.remote(), role="reward service", call="shaper_state",
                    timeout_s=self.timeout_s)

    def set_shaper_state(self, state: Mapping[str, Any]) -> None:
        wait(self.service.set_shaper_state.remote(state), role="reward service", call="set_shaper_state",
             timeout_s=self.timeout_s)


def build_reward_service(cfg: RewardConfig, **ray_options: Any) -> Any:
    """A RewardService actor handle built from the reward config (ray_options: e.g. name, num_cpus)."""
    service = RewardService.options(**ray_options) if ray_options else RewardService
    return service.remote(cfg)
