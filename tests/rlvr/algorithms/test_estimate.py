"""The advantage stage: outcome estimators into a TrainBatch, and the KL penalty taken off the reward."""

import math
import sys
from pathlib import Path

import pytest

from rlvr.algorithms.estimate import OutcomeAdvantages

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402


class FixedPenalty:
    """Stands in for KLPenalty's call to the learner: 0.1 per completion token."""

    def __call__(self, batch):
        return 0.1 * batch.completion_mask_B_Lc.float()


def test_outcome_advantages_per_token():
    groups = groups_of(PROMPTS[:2], [COMPLETIONS[0], COMPLETIONS[1][:2]])  # rewards [0, 1] in each group
    batch = OutcomeAdvantages("dr_grpo", "auto").make_batch(groups)
    # completions of 3, 1, 5, 2 tokens: each token carries its completion's advantage, 0 at padding
    assert batch.advantages_B_Lc[:, 0].tolist() == [-0.5, 0.5, -0.5, 0.5]
    assert batch.advantages_B_Lc[2].tolist() == [-0.5] * 5 and batch.advantages_B_Lc[1].tolist() == [0.5] + [0.0] * 4


def test_kl_in_the_reward_lowers_longer_completions_more():
    groups = groups_of(PROMPTS[1:2], COMPLETIONS[1:2])  # completions of 5, 2 and 2 tokens; rewards 0, 1, 0
    groups[0][2] = groups[0][2].__class__(groups[0][2].rollout, math.nan, groups[0][2].terms)  # a failed reward
    plain = OutcomeAdvantages("dr_grpo", "none").make_batch(groups)
    penalised = OutcomeAdvantages("dr_grpo", "none", kl_penalty=FixedPenalty()).make_batch(groups)
    # rewards become 0 - 0.5 and 1 - 0.2 (the failed one stays out); mean 0.15
    assert plain.advantages_B_Lc[:, 0].tolist() == [-0.5, 0.5]
    assert penalised.advantages_B_Lc[:, 0].tolist() == pytest.approx([-0.65, 0.65])
