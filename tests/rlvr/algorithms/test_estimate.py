"""The advantage stage: outcome estimators into a TrainBatch, and the KL penalty taken off the reward."""

import math
import statistics
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


def _whiten(values):
    mean, std = statistics.mean(values), statistics.stdev(values)
    return [(v - mean) / (std + 1e-6) for v in values]


def test_reinforce_pp_whitens_over_the_batch_tokens():
    """REINFORCE++ (Hu 2025) and verl's masked_whiten: mean and std over the batch's tokens, so a long
    completion weighs by its length (per-rollout whitening would give +-0.866 here)."""
    groups = groups_of(PROMPTS[:2], [COMPLETIONS[0], COMPLETIONS[1][:2]])  # rewards 0, 1, 0, 1; 3, 1, 5, 2 tokens
    batch = OutcomeAdvantages("reinforce_pp", "auto").make_batch(groups)
    mask = batch.completion_mask_B_Lc
    values = [0.0] * 3 + [1.0] + [0.0] * 5 + [1.0] * 2  # no baseline: each token carries its reward
    low, high = sorted(set(_whiten(values)))
    assert batch.advantages_B_Lc[:, 0].tolist() == pytest.approx([low, high, low, high], abs=1e-5)
    assert (batch.advantages_B_Lc[~mask] == 0).all()
    tokens = batch.advantages_B_Lc[mask]
    assert abs(float(tokens.mean())) < 1e-6 and float(tokens.std()) == pytest.approx(1.0, abs=1e-5)
    # the earlier choice stays as advantage_norm = "batch": one count per rollout
    per_rollout = OutcomeAdvantages("reinforce_pp", "batch").make_batch(groups)
    assert per_rollout.advantages_B_Lc[:, 0].tolist() == pytest.approx([-0.866, 0.866, -0.866, 0.866], abs=1e-3)


def test_reinforce_pp_gives_each_token_the_kl_to_go():
    """The paper's token reward r 1[t = last] - beta KL_t summed from t to the end (gamma = 1): early tokens
    carry more of the penalty than late ones, then the whole batch's tokens are whitened."""
    groups = groups_of(PROMPTS[:2], [COMPLETIONS[0], COMPLETIONS[1][:2]])  # rewards 0, 1, 0, 1; 3, 1, 5, 2 tokens
    batch = OutcomeAdvantages("reinforce_pp", "auto", kl_penalty=FixedPenalty()).make_batch(groups)
    returns = [[-0.3, -0.2, -0.1], [0.9], [-0.5, -0.4, -0.3, -0.2, -0.1], [0.8, 0.9]]
    expected = iter(_whiten([v for row in returns for v in row]))
    for row, values in enumerate(returns):
        got = batch.advantages_B_Lc[row, : len(values)].tolist()
        assert got == pytest.approx([next(expected) for _ in values], abs=1e-5), row
