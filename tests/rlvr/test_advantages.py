import math

import pytest
import torch

from rlvr.advantages import ADVANTAGES, dr_grpo, grpo, rloo

NAN = math.nan


def test_grpo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # mean 0.5, unbiased std sqrt(1/3)
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5]]) / math.sqrt(1 / 3)
    assert torch.allclose(grpo(rewards), expected, atol=1e-5)


def test_dr_grpo_and_rloo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(dr_grpo(rewards), torch.tensor([[0.75, -0.25, -0.25, -0.25]]))
    # leave-one-out: r_i - mean of the other three
    assert torch.allclose(rloo(rewards), torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_uniform_group_gives_zero(name):
    out = ADVANTAGES[name](torch.tensor([[0.7, 0.7, 0.7], [0.0, 0.0, 0.0]]))
    assert torch.equal(out, torch.zeros(2, 3))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_failed_rewards_are_left_out(name):
    with_nan = ADVANTAGES[name](torch.tensor([[1.0, NAN, 0.0, 0.0]]))
    without = ADVANTAGES[name](torch.tensor([[1.0, 0.0, 0.0]]))
    assert with_nan[0, 1] == 0
    assert torch.allclose(with_nan[0, [0, 2, 3]], without[0], atol=1e-6)
    assert not torch.isnan(with_nan).any()


def test_groups_are_independent():
    rewards = torch.tensor([[1.0, 0.0], [5.0, 3.0]])
    assert torch.allclose(dr_grpo(rewards), torch.tensor([[0.5, -0.5], [1.0, -1.0]]))
