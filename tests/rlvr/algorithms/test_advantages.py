import math

import pytest
import torch

from rlvr.algorithms.advantages import ESTIMATORS, gae, group_advantages, outcome_token_rewards
from rlvr.algorithms.entropy_control import EntropyControl

NAN = math.nan


def test_grpo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # mean 0.5, unbiased std sqrt(1/3)
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5]]) / math.sqrt(1 / 3)
    assert torch.allclose(group_advantages(rewards, "grpo"), expected, atol=1e-5)


def test_dr_grpo_and_rloo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(group_advantages(rewards, "dr_grpo"), torch.tensor([[0.75, -0.25, -0.25, -0.25]]))
    # leave-one-out: r_i - mean of the other three
    assert torch.allclose(group_advantages(rewards, "rloo"), torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]))


def test_reinforce_pp_whitens_over_the_batch():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # per-rollout whitening (advantage_norm "batch"): batch mean 0.75, unbiased std sqrt(0.25) = 0.5
    expected = torch.tensor([[0.5, 0.5], [-1.5, 0.5]])
    assert torch.allclose(group_advantages(rewards, "reinforce_pp", "batch"), expected, atol=1e-5)
    # an all-correct group keeps a positive advantage, unlike every group baseline
    # the paper's token whitening needs the tokens: at [P, G] the estimator gives r - b (token_advantages scales)
    assert torch.equal(group_advantages(rewards, "reinforce_pp"), rewards)


def test_reinforce_pp_baseline_subtracts_the_group_then_whitens():
    rewards = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    # group-centred: [0.5, -0.5, 0, 0]; batch mean 0, unbiased std sqrt(0.5 / 3)
    expected = torch.tensor([[0.5, -0.5], [0.0, 0.0]]) / math.sqrt(0.5 / 3)
    assert torch.allclose(group_advantages(rewards, "reinforce_pp_baseline", "batch"), expected, atol=1e-5)
    assert torch.allclose(group_advantages(rewards, "reinforce_pp_baseline"), expected * math.sqrt(0.5 / 3))


def test_norm_scope_overrides_the_estimators_default():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(group_advantages(rewards, "grpo", "none"), torch.tensor([[0.75, -0.25, -0.25, -0.25]]))
    assert torch.allclose(group_advantages(rewards, "dr_grpo", "group"), group_advantages(rewards, "grpo"))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_uniform_group_gives_zero(name):
    out = group_advantages(torch.tensor([[0.7, 0.7, 0.7], [0.0, 0.0, 0.0]]), name)
    assert torch.allclose(out, torch.zeros(2, 3), atol=1e-6)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_failed_rewards_are_left_out(name):
    with_nan = group_advantages(torch.tensor([[1.0, NAN, 0.0, 0.0]]), name)
    without = group_advantages(torch.tensor([[1.0, 0.0, 0.0]]), name)
    assert with_nan[0, 1] == 0
    assert torch.allclose(with_nan[0, [0, 2, 3]], without[0], atol=1e-6)
    assert not torch.isnan(with_nan).any()


def test_groups_are_independent():
    rewards = torch.tensor([[1.0, 0.0], [5.0, 3.0]])
    assert torch.allclose(group_advantages(rewards, "dr_grpo"), torch.tensor([[0.5, -0.5], [1.0, -1.0]]))


def test_gae_hand_computed():
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards = outcome_token_rewards(torch.tensor([1.0, -1.0]), mask)
    assert rewards.tolist() == [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]
    values = torch.tensor([[0.5, 0.2, 0.4], [0.3, 9.0, 9.0]])  # padding values are ignored
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # sequence 0: deltas d2 = 1 - 0.4 = 0.6, d1 = 0.9 * 0.4 - 0.2 = 0.16, d0 = 0.9 * 0.2 - 0.5 = -0.32
    a2 = 0.6
    a1 = 0.16 + 0.45 * a2
    a0 = -0.32 + 0.45 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert adv[1].tolist() == pytest.approx([-1.3, 0.0, 0.0])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_gae_with_lambda_one_and_no_discount_is_the_return_minus_the_value():
    mask = torch.ones(1, 4, dtype=torch.bool)
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    adv, ret = gae(outcome_token_rewards(torch.tensor([1.0]), mask), values, mask, 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6]) and ret[0].tolist() == pytest.approx([1.0] * 4)


def test_entropy_control():
    linear = EntropyControl("linear", 0.01, coef_end=0.0, total_steps=11)
    assert [round(linear.value(s), 6) for s in (0, 5, 10, 20)] == [0.01, 0.005, 0.0, 0.0]
    resumed = EntropyControl("linear", 0.01, coef_end=0.0, total_steps=101)  # train.steps changed on resume
    resumed.restore(linear.state())
    assert [round(resumed.value(s), 6) for s in (5, 10, 50)] == [0.005, 0.0, 0.0]  # the schedule it started with
    adaptive = EntropyControl("adaptive", 0.0, target=1.0, lr=0.1)
    adaptive.update(0.5)  # below target: the bonus grows
    assert adaptive.value(0) == pytest.approx(0.05)
    adaptive.update(2.0)  # above: it shrinks, never below 0
    assert adaptive.value(0) == 0.0
    constant = EntropyControl("constant", 0.02)
    constant.update(0.0)
    assert constant.value(100) == 0.02
