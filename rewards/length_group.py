r"""Length shaping that needs the correctness channel, and for some the whole group (group shapers).

Each receives `rollouts_G` and `correct_G` (the correctness term's values, NaN where it failed; a
rollout counts as correct at value >= 1, as rlvr/scoring/correctness.py decides) and returns one value per
rollout. They are terms like any other: weighted and summed with the correctness term. NaN in, NaN
out for that rollout.

`cosine_length`: cosine length-scaled reward (Yeo et al. 2025, "Demystifying Long Chain-of-Thought
Reasoning in LLMs", arXiv 2502.03373, Sec. 4.1, Eq. 1). With t = num_tokens, T = max_tokens,

    CosFn(t; r_0, r_T) = r_T + (r_0 - r_T) * (1 + cos(pi * t / T)) / 2
    R = CosFn(t; r0_correct, rT_correct) if correct, CosFn(t; r0_wrong, rT_wrong) if wrong,
        exceed if the rollout was truncated (finish_reason "length" or t >= T).
    Paper defaults: 2 -> 1 for correct (short correct favoured), -10 -> 0 for wrong (long wrong
    penalised less), exceed -10. It replaces the correctness reward: give the verifier weight 0.

`kimi_length`: Kimi k1.5 group-relative length reward (Kimi Team 2025, arXiv 2501.12599, Sec. 2.3.3,
"Length Penalty"):

    lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)     (min/max over the group)
    R_i = lambda_i if correct else min(0, lambda_i)              e.g. lengths 100, 200, 300, all
                                                                  correct -> 0.5, 0, -0.5
    A group of equal lengths gets 0 (the formula divides by zero there).

`drpo_length`: DRPO-style length reward normalised among correct rollouts only (Li et al. 2025,
"DRPO: Efficient Reasoning via Decoupled Reward Policy Optimization", arXiv 2510.04474). The paper
shows (Sec. 3) that a length penalty inside GRPO's group normalisation gives correct-but-long answers
a negative advantage, and fixes it by normalising the length signal within the positive group only.
Deviation: DRPO changes the objective (a closed-form, KL-regularised positive distribution inside a
discriminative loss); we keep GRPO and shape the reward so that the same guarantee holds:

    p = fraction correct;  d_i = (mean_len_c - len_i) / (max_len_c - min_len_c)  over correct i
    R_i = (1 - p) * d_i if correct else 0                 (0 when fewer than 2 correct lengths differ)

    sum_i R_i = 0, so the group mean reward is unchanged; R_i >= -(1 - p), so with this term's weight
    at most the correctness term's weight every correct rollout keeps reward >= the group mean, i.e.
    a non-negative GRPO advantage, and shorter correct rollouts get more of it.

`l1_max`: L1's LCPO-Max reward (Aggarwal & Welleck 2025, arXiv 2503.04697, Sec. 3), the
correctness-gated budget reward: R = 1[correct] * clip(alpha * (n_gold - n_y) + delta, 0, 1), with
the budget as in length.py's `target_length`. It replaces the correctness reward (weight 0 there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rlvr.rewards.protocol import passed as _correct  # one owner of "correct" (value >= 1)
from rlvr.rewards.length import token_budget
from rlvr.rewards.registry import register
from rlvr.types import Rollout


def _truncated(rollout: Rollout, max_tokens: int) -> bool:
    return rollout.finish_reason == "length" or rollout.num_tokens >= max_tokens


@register("cosine_length", group=True)
@dataclass(frozen=True)
class CosineLength:
    max_tokens: int
    r0_correct: float = 2.0
    rT_correct: float = 1.0
    r0_wrong: float = -10.0
    rT_wrong: float = 0.0
    exceed: float = -10.0

    def __call__(self, rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> list[float]:
        values = []
        for rollout, c in zip(rollouts_G, correct_G):
            if math.isnan(c):
                values.append(math.nan)
                continue
            if _truncated(rollout, self.max_tokens):
                values.append(self.exceed)
                continue
            r0, rT = (self.r0_correct, self.rT_correct) if _correct(c) else (self.r0_wrong, self.rT_wrong)
            values.append(rT + (r0 - rT) * (1 + math.cos(math.pi * rollout.num_tokens / self.max_tokens)) / 2)
        return values


@register("kimi_length", group=True)
def kimi_length(rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> list[float]:
    lengths = [r.num_tokens for r in rollouts_G]
    lo, hi = min(lengths), max(lengths)
    values = []
    for n, c in zip(lengths, correct_G):
        lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
        values.append(math.nan if math.isnan(c) else lam if _correct(c) else min(0.0, lam))
    return values


@register("drpo_length", group=True)
def drpo_length(rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> list[float]:
    known = [not math.isnan(c) for c in correct_G]
    correct = [k and _correct(c) for k, c in zip(known, correct_G)]
    lengths = [r.num_tokens for r, ok in zip(rollouts_G, correct) if ok]
    p = len(lengths) / max(1, sum(known))
    spread = max(lengths) - min(lengths) if lengths else 0
    mean = sum(lengths) / len(lengths) if lengths else 0.0
    return [
        math.nan if not k else (1 - p) * (mean - r.num_tokens) / spread if ok and spread else 0.0
        for r, k, ok in zip(rollouts_G, known, correct)
    ]


@register("l1_max", group=True)
@dataclass(frozen=True)
class L1Max:
    alpha: float = 0.0003
    delta: float = 0.5
    budget_key: str = "target_tokens"

    def __call__(self, rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> list[float]:
        return [
            math.nan if math.isnan(c) else float(_correct(c))
            * min(1.0, max(0.0, self.alpha * (token_budget(r, self.budget_key) - r.num_tokens) + self.delta))
            for r, c in zip(rollouts_G, correct_G)
        ]
