r"""`laser_d`: LASER-D style difficulty-aware length step reward, reading the driver's per-prompt pass rates.

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

Deviations from the paper: difficulty is the prompt's pass rate tracked by the driver across the steps
it appeared in before this one (rlvr/data/curriculum.py, an exponential moving average with
`curriculum.decay`, handed in as `pass_rate`), or this group's own pass rate for a prompt not seen
before, rather than the current batch only; bucket targets come from a sliding window of the correct
lengths seen in training rather than a separate monitoring set; until a bucket has `min_lengths` of
them, it uses `initial_target`. LASER-DE's exploration bonus for wrong answers is not included.

State: only the length windows, updated by training groups; with `update=False` (held-out evaluation)
the call reads them and changes nothing.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

from rlvr.rewards.protocol import passed
from rlvr.rewards.registry import register
from rlvr.types import Rollout

BUCKETS = ("easy", "medium", "hard")


@register("laser_d", group=True)
class LaserD:
    """Keeps length windows in the reward service (one instance per term); pass rates come from the driver."""

    reads_pass_rate = True  # the scorer passes pass_rate= and update= (rewards/protocol.py)

    def __init__(
        self,
        initial_target: int,
        alpha: float = 0.5,
        coverage: float = 0.9,
        easy_above: float = 2 / 3,
        hard_below: float = 1 / 3,
        window: int = 1024,
        min_lengths: int = 32,
    ) -> None:
        if not 0 < coverage <= 1 or not 0 <= hard_below <= easy_above <= 1:
            raise ValueError("laser_d: need 0 < coverage <= 1 and 0 <= hard_below <= easy_above <= 1")
        self.initial_target, self.alpha, self.coverage = initial_target, alpha, coverage
        self.easy_above, self.hard_below, self.min_lengths = easy_above, hard_below, min_lengths
        self.lengths = {b: collections.deque(maxlen=window) for b in BUCKETS}

    def bucket(self, pass_rate: float) -> str:
        return "easy" if pass_rate >= self.easy_above else "hard" if pass_rate <= self.hard_below else "medium"

    def target(self, bucket: str) -> int:
        seen = sorted(self.lengths[bucket])
        if len(seen) < self.min_lengths:
            return self.initial_target
        return seen[min(len(seen) - 1, math.ceil(self.coverage * len(seen)) - 1)]

    def __call__(
        self,
        rollouts_G: Sequence[Rollout],
        correct_G: Sequence[float],
        *,
        pass_rate: float | None = None,
        update: bool = True,
    ) -> list[float]:
        known = [c for c in correct_G if not math.isnan(c)]
        if not known:
            return [math.nan] * len(rollouts_G)
        rate = pass_rate if pass_rate is not None else sum(map(passed, known)) / len(known)
        bucket = self.bucket(rate)
        target = self.target(bucket)
        values = []
        for rollout, c in zip(rollouts_G, correct_G):
            values.append(math.nan if math.isnan(c) else self.alpha * float(passed(c) and rollout.num_tokens <= target))
            if update and passed(c):
                self.lengths[bucket].append(rollout.num_tokens)
        return values

    def state(self) -> dict[str, list[int]]:
        """The length windows, for a resumable checkpoint (the scorer's `shaper_state`)."""
        return {b: list(window) for b, window in self.lengths.items()}

    def restore(self, state: dict[str, list[int]]) -> None:
        for b, window in self.lengths.items():
            window.clear()
            window.extend(int(n) for n in state[b])
