"""A complete reward plugin: right answers in a \\boxed{}, minus a penalty for running past a token budget.

Enable it next to the verifier (the module must be importable: on PYTHONPATH or in an installed package):

    [reward]
    terms = [{ name = "math" }, { name = "custom_reward:concise", weight = 0.5, kwargs = { budget = 512 } }]

Check it on saved rollouts before training:

    PYTHONPATH=examples rlvr verify rollouts.jsonl --reward custom_reward:concise --kwargs '{"budget": 512}' \\
        --answer-key answer --response-key completion --tokens-key num_tokens
"""

from dataclasses import dataclass

from rlvr.rewards import RewardResult, register
from rlvr.types import Rollout


@register("concise")  # also reachable by name once this module is imported (or listed as an entry point)
@dataclass(frozen=True)  # a frozen dataclass: parameterised, and it pickles into the scoring processes
class Concise:
    budget: int = 512

    def __call__(self, rollout: Rollout) -> RewardResult:
        boxed = float("\\boxed{" in rollout.completion)
        over = min(1.0, max(0, rollout.num_tokens - self.budget) / self.budget)
        return RewardResult(boxed - over, parts={"boxed": boxed, "over_budget": over})  # parts are logged
