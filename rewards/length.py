r"""Length shaping terms that need only the rollout itself (group shapers: length_group.py, laser.py).

`overlong`: DAPO soft overlong punishment (Yu et al. 2025, "DAPO", arXiv 2503.14476, Eq. 13), with
L = num_tokens, L_max = max_tokens, L_cache = buffer_tokens:

    R(L) = 0                               if L <= L_max - L_cache
         = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
         = -1                              if L > L_max
    e.g. max_tokens=100, buffer_tokens=20: L=80 -> 0, L=90 -> -0.5, L=100 -> -1.

`truncation`: `penalty` (default -1) when the rollout hit the token limit (finish_reason "length"),
else 0: the "Truncation" row of LASER's unified view (Liu et al. 2025, arXiv 2505.15612, Eq. 2 and
Table 2, rho for L(y) > L_T) and ProRL's stop-properly penalty, as a separate term instead of a
rewritten correctness reward.

`target_length`: L1's LCPO-Exact length term (Aggarwal & Welleck 2025, "L1", arXiv 2503.04697, Sec. 3):

    r(y) = 1[y correct] - alpha * |n_gold - n_y|    (this term is the second part; the verifier is the first)
    e.g. alpha=0.0003, budget 1000, 1500 tokens -> -0.15.

The budget n_gold comes from `sample.metadata[budget_key]`, else from the prompt's "Think for N
tokens" (L1's prompt suffix); a rollout with neither is an error, not a 0. The LCPO-Max variant gates
on correctness and is the `l1_max` group shaper.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvr.rewards.registry import register
from rlvr.types import Rollout

_BUDGET_RE = re.compile(r"think for (?:up to |at most |maximum |a maximum of )?(\d+) tokens", re.IGNORECASE)


@register("overlong")
@dataclass(frozen=True)
class OverlongPenalty:
    max_tokens: int
    buffer_tokens: int

    def __post_init__(self) -> None:
        if not 0 < self.buffer_tokens <= self.max_tokens:
            raise ValueError(f"overlong: need 0 < buffer_tokens <= max_tokens, got {self.buffer_tokens}")

    def __call__(self, rollout: Rollout) -> float:
        free = self.max_tokens - self.buffer_tokens
        n = rollout.num_tokens
        if n <= free:
            return 0.0
        if n <= self.max_tokens:
            return (free - n) / self.buffer_tokens
        return -1.0


@register("truncation")
@dataclass(frozen=True)
class TruncationPenalty:
    penalty: float = -1.0

    def __call__(self, rollout: Rollout) -> float:
        return self.penalty if rollout.finish_reason == "length" else 0.0


def token_budget(rollout: Rollout, budget_key: str = "target_tokens") -> int:
    """The rollout's length budget: sample.metadata[budget_key], else "Think for N tokens" in the prompt."""
    if budget_key in rollout.sample.metadata:
        return int(rollout.sample.metadata[budget_key])
    found = _BUDGET_RE.findall(rollout.sample.prompt)
    if not found:
        raise ValueError(f"sample {rollout.sample.id!r}: no metadata[{budget_key!r}], no 'Think for N tokens'")
    return int(found[-1])


@register("target_length")
@dataclass(frozen=True)
class TargetLength:
    alpha: float = 0.0003  # L1's value
    budget_key: str = "target_tokens"

    def __call__(self, rollout: Rollout) -> float:
        return -self.alpha * abs(token_budget(rollout, self.budget_key) - rollout.num_tokens)
