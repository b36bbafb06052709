"""Held-out evaluation: greedy decoding on prompts never trained on, scored by the reward service.

Evaluation only reads: it scores with `update_state=False`, so no group shaper's state (LASER-D's length
windows) learns from held-out answers, and the driver's pass-rate tracker never sees them.
"""

from __future__ import annotations

import statistics

from rlvr.rollout.sampling import generate_and_score
from rlvr.rollout.worker import SamplingSpec
from rlvr.scoring.correctness import Correctness
from rlvr.types import Sample


def evaluate(workers, reward_service, samples: list[Sample], max_tokens: int, judge: Correctness) -> dict[str, float]:
    """Greedy decoding on held-out prompts. accuracy = share that `judge` counts as correct."""
    spec = SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0)
    scored, _ = generate_and_score(workers, reward_service, samples, spec, update_state=False)
    first = [group[0] for group in scored]
    results = [s.terms[judge.label] for s in first]
    ok = [r.value for r in results if r.status == "ok"]
    return {
        "eval/accuracy": sum(map(judge.is_correct, first)) / len(results),
        "eval/score_mean": statistics.fmean(ok) if ok else float("nan"),
        "eval/failed": float(len(results) - len(ok)),
        "eval/response_length": statistics.fmean(g[0].rollout.num_tokens for g in scored),
        "eval/prompts": float(len(results)),
    }


def first_last_mean(values: list[float], n: int = 10) -> tuple[float, float]:
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])
