"""Which reward term measures correctness, and what counts as correct: decided here, imported elsewhere.

    judge = Correctness(correctness_label(cfg.reward.terms, cfg.reward.correctness))
    judge.is_correct(scored)          # the term scored full credit
    judge.pass_rate(group_G)          # fraction correct among the rollouts whose term has a value

Evaluation's accuracy, DAPO's dynamic-sampling filter (0 < #correct < G), the per-prompt pass-rate
tracker and the group shapers' correctness channel all read correctness through this module.

The term is `reward.correctness` when set, else the first per-rollout term (a group shaper cannot be
it: group shapers receive correctness). A rollout is correct when that term's value is at least
`CORRECT_AT` = 1.0 (rewards/protocol.py): binary verifiers give 1.0, and partial credit below it does not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlvr.rewards import registry
from rlvr.rewards.protocol import passed  # the threshold (CORRECT_AT) is the reward contract's
from rlvr.types import ScoredRollout


def term_label(term: Any) -> str:
    """A reward term's metric label: `label`, else its name (after ':' for a dotted path)."""
    return term.label or term.name.rpartition(":")[2]


def correctness_label(terms: Sequence[Any], correctness: str = "") -> str:
    """The label of the term that measures correctness (`terms`: RewardTermConfig-like objects)."""
    if correctness:
        return correctness
    for term in terms:
        if not registry.is_group_reward(registry.resolve(term.name, term.kwargs)):
            return term_label(term)
    raise ValueError("no per-rollout reward term to measure correctness; set reward.correctness")


@dataclass(frozen=True)
class Correctness:
    """Reads the correctness term of scored rollouts."""

    label: str

    def value(self, scored: ScoredRollout) -> float:
        """The term's value, NaN when it has none (it failed, or a timeout voids it)."""
        result = scored.terms.get(self.label)
        return math.nan if result is None else result.value

    def is_correct(self, scored: ScoredRollout) -> bool:
        return passed(self.value(scored))

    def pass_rate(self, group_G: Sequence[ScoredRollout]) -> float:
        """Fraction correct among the rollouts whose correctness is known; NaN when none is."""
        known = [v for v in map(self.value, group_G) if not math.isnan(v)]
        return sum(map(passed, known)) / len(known) if known else math.nan

    def informative(self, group_G: Sequence[ScoredRollout]) -> bool:
        """DAPO's filter (Yu et al. 2025, arXiv 2503.14476, Eq. 11): 0 < #correct < G, over the rollouts
        that have a reward (failed ones are masked out of the update)."""
        ok = [s for s in group_G if s.ok]
        correct = sum(map(self.is_correct, ok))
        return 0 < correct < len(ok)
