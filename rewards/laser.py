r"""`laser_d`: LASER-D style difficulty-aware length step reward, with per-prompt state kept in the service.

LASER (Liu et al. 2025, "Learn to Reason Efficiently with Adaptive Length-based Reward Shaping",
arXiv 2505.15612) writes length shaping as (Eq. 2)

    R(x, y) = C(y) + lambda(y) * S(y),   LASER: C = correctness, lambda = 1[correct],
                                         S(y) = alpha * 1[L(y) <= L_T]     (a step at target L_T)

and LASER-D makes L_T dynamic and difficulty-aware: each query is bucketed easy / medium / hard by
how often the policy solves it, and each bucket's target is the length that covers a `coverage`
fraction of recent correct answers in that bucket, so easy prompts get short targets and hard ones
long. This term is lambda * S; the correctness term supplies C.

    e.g. alpha=0.5: a correct 300-token answer to an easy prompt whose target is 400 -> 0.5;
         at 500 tokens -> 0; a wrong answer -> 0.

Deviations from the paper: difficulty is each prompt's pass rate tracked across the steps it appears
in (an exponential moving average keyed by sample id, `decay` per appearance) rather than the current
batch only, and bucket targets come from a sliding window of the correct lengths seen in training
rather than a separate monitoring set; until a bucket has `min_lengths` of them, it uses
`initial_target`. LASER-DE's exploration bonus for wrong answers is not included.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

from rlvr.correctness import CORRECT_AT
from rlvr.rewards.registry import register
from rlvr.types import Rollout

BUCKETS = ("easy", "medium", "hard")


@register("laser_d", group=True)
class LaserD:
    """Stateful (pass rates and length windows); lives in the reward service, one instance per term."""

    def __init__(
        self,
        initial_target: int,
        alpha: float = 0.5,
        coverage: float = 0.9,
        easy_above: float = 2 / 3,
        hard_below: float = 1 / 3,
        decay: float = 0.5,
        window: int = 1024,
        min_lengths: int = 32,
    ) -> None:
        if not 0 < coverage <= 1 or not 0 <= hard_below <= easy_above <= 1:
            raise ValueError("laser_d: need 0 < coverage <= 1 and 0 <= hard_below <= easy_above <= 1")
        self.initial_target, self.alpha, self.coverage = initial_target, alpha, coverage
        self.easy_above, self.hard_below, self.decay, self.min_lengths = easy_above, hard_below, decay, min_lengths
        self.pass_rates: dict[str, float] = {}
        self.lengths = {b: collections.deque(maxlen=window) for b in BUCKETS}

    def bucket(self, pass_rate: float) -> str:
        return "easy" if pass_rate >= self.easy_above else "hard" if pass_rate <= self.hard_below else "medium"

    def target(self, bucket: str) -> int:
        seen = sorted(self.lengths[bucket])
        if len(seen) < self.min_lengths:
            return self.initial_target
        return seen[min(len(seen) - 1, math.ceil(self.coverage * len(seen)) - 1)]

    def __call__(self, rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> list[float]:
        known = [c for c in correct_G if not math.isnan(c)]
        if not known:
            return [math.nan] * len(rollouts_G)
        key = rollouts_G[0].sample.id
        rate = sum(c >= CORRECT_AT for c in known) / len(known)
        old = self.pass_rates.get(key)
        self.pass_rates[key] = rate if old is None else self.decay * old + (1 - self.decay) * rate
        bucket = self.bucket(self.pass_rates[key])
        target = self.target(bucket)
        values = []
        for rollout, c in zip(rollouts_G, correct_G):
            correct = not math.isnan(c) and c >= CORRECT_AT
            values.append(math.nan if math.isnan(c) else self.alpha * float(correct and rollout.num_tokens <= target))
            if correct:
                self.lengths[bucket].append(rollout.num_tokens)
        return values
