r"""Sampled-evaluation metrics as pure functions of per-sample records: pass@k, avg@n, maj@n, token budgets.

    pass_at_k(n=16, c=4, k=4)                      # 1 - C(12, 4) / C(16, 4) = 0.728
    summarize(correct_P_N, tokens_P_N, finished_P_N, votes_P_N, ks=(1, 4), max_tokens=512)

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code", arXiv 2107.03374, Eq. 1 and the numerically stable product of Fig. 3): for a prompt with n
samples of which c are correct,

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i),

averaged over prompts. pass@1 equals avg@n, the mean share of correct samples (the estimator is
unbiased for k = 1 too). maj@n: the answer most samples of a prompt give (ties: the one given first)
is the prompt's answer; samples without an extractable answer do not vote. Accuracy at a token budget
B (Muennighoff et al. 2025 "s1", Fig. 1 plots accuracy against the thinking budget): the share of all
samples that are correct *and* finished (stopped, not truncated) within B tokens, for B = 25/50/75/100%
of the generation limit. Deviation from s1: the budget is applied after the fact to samples generated
with the full limit, not enforced while generating, so one run gives the whole curve.

Naming: P prompts, N samples per prompt.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Sequence

BUDGET_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021's unbiased pass@k for one prompt with n samples, c of them correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_correct(votes_N: Sequence[str | None], correct_N: Sequence[bool]) -> bool:
    """maj@n of one prompt: is the most frequent answer (first seen on ties) a correct one?"""
    counts = collections.Counter(v for v in votes_N if v is not None)
    if not counts:
        return False
    top = max(counts.values())
    winner = next(v for v in votes_N if v is not None and counts[v] == top)
    return any(c for v, c in zip(votes_N, correct_N) if v == winner)


def budget_accuracy(correct: Sequence[bool], tokens: Sequence[int], finished: Sequence[bool], budget: int) -> float:
    """Share of samples that are correct and finished within `budget` tokens."""
    hits = sum(c and f and t <= budget for c, t, f in zip(correct, tokens, finished))
    return hits / len(correct)


def summarize(
    correct_P_N: Sequence[Sequence[bool]],
    tokens_P_N: Sequence[Sequence[int]],
    finished_P_N: Sequence[Sequence[bool]],
    votes_P_N: Sequence[Sequence[str | None]],
    ks: Sequence[int],
    max_tokens: int,
) -> dict[str, float]:
    """Every metric of `metrics.json`; n is the samples per prompt (the same for all prompts)."""
    sizes = {len(row) for row in correct_P_N}
    if len(sizes) != 1:
        raise ValueError(f"every prompt needs the same number of samples, got sizes {sorted(sizes)}")
    (n,) = sizes
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"k = {bad} outside 1..n (n = {n} samples per prompt)")
    counts_P = [sum(row) for row in correct_P_N]
    flat_correct = [c for row in correct_P_N for c in row]
    flat_tokens = [t for row in tokens_P_N for t in row]
    flat_finished = [f for row in finished_P_N for f in row]
    metrics: dict[str, float] = {
        f"pass@{k}": statistics.fmean(pass_at_k(n, c, k) for c in counts_P) for k in ks
    }
    metrics[f"avg@{n}"] = statistics.fmean(flat_correct)
    metrics[f"maj@{n}"] = statistics.fmean(
        majority_correct(v, c) for v, c in zip(votes_P_N, correct_P_N)
    )
    metrics["response_length/mean"] = statistics.fmean(flat_tokens)
    metrics["truncated"] = 1.0 - statistics.fmean(flat_finished)
    for fraction in BUDGET_FRACTIONS:
        budget = round(fraction * max_tokens)
        metrics[f"accuracy@{round(fraction * 100)}%tokens"] = budget_accuracy(
            flat_correct, flat_tokens, flat_finished, budget
        )
    metrics["prompts"] = float(len(correct_P_N))
    metrics["samples_per_prompt"] = float(n)
    return metrics
