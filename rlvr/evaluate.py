"""Held-out evaluation: greedy decoding on prompts never trained on, scored by the reward service."""

from __future__ import annotations

import statistics

from rlvr.rollout import SamplingSpec
from rlvr.sampling import generate_and_score
from rlvr.types import Sample


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
