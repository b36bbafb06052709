"""Held-out evaluation and the streaming generate -> score stage of a step."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import ray

from rlvr.rollout import SamplingSpec
from rlvr.types import Sample, ScoredRollout


@dataclass(frozen=True)
class StageTimes:
    generate_s: float  # first request to last group out of the engines
    reward_s: float  # last group out to last score in (scoring overlaps generation before that)


def generate_and_score(workers, reward_service, samples_P: list[Sample], spec: SamplingSpec):
    """Sample G completions per prompt on every engine; each group goes to scoring the moment it is done.

    Returns the scored groups in the order of `samples_P`, and the stage times.
    """
    start = time.perf_counter()
    shards = [samples_P[i :: len(workers)] for i in range(len(workers))]
    streams = [w.generate.options(num_returns="streaming").remote(s, spec) for w, s in zip(workers, shards) if s]
    pending = []
    while streams:
        (ready,), _ = ray.wait(streams, num_returns=1)
        try:
            group_ref = next(ready)
        except StopIteration:
            streams.remove(ready)
            continue
        pending.append(reward_service.score_group.remote(group_ref))
    generated = time.perf_counter()
    scored = ray.get(pending)
    done = time.perf_counter()
    position = {s.id: i for i, s in enumerate(samples_P)}
    scored.sort(key=lambda group: position[group[0].rollout.sample.id])
    return scored, StageTimes(generate_s=generated - start, reward_s=done - generated)


def evaluate(workers, reward_service, samples: list[Sample], max_tokens: int, correctness: str) -> dict[str, float]:
    """Greedy decoding on held-out prompts. accuracy = share whose `correctness` term scored full credit."""
    spec = SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0)
    scored, _ = generate_and_score(workers, reward_service, samples, spec)
    results = [group[0].terms[correctness] for group in scored]
    ok = [r.value for r in results if r.status == "ok"]
    return {
        "eval/accuracy": sum(v >= 1.0 for v in ok) / len(results),
        "eval/score_mean": statistics.fmean(ok) if ok else float("nan"),
        "eval/failed": float(len(results) - len(ok)),
        "eval/response_length": statistics.fmean(g[0].rollout.num_tokens for g in scored),
        "eval/prompts": float(len(results)),
    }


def correctness_label(terms, correctness: str) -> str:
    """The reward term that measures correctness: `reward.correctness`, else the first term."""
    if correctness:
        return correctness
    first = terms[0]
    return first.label or first.name.rpartition(":")[2]


def first_last_mean(values: list[float], n: int = 10) -> tuple[float, float]:
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])
