"""PPO's critic actor (in this process): values at the policy's positions, learning the returns."""

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlvr.algorithms.advantages import gae, outcome_token_rewards
from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.critic import Critic, explained_variance
from rlvr.learner.optim import OptimSpec

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402

CriticClass, LearnerClass = Critic.__ray_actor_class__, Learner.__ray_actor_class__


def ppo_batch(critic):
    groups = groups_of(PROMPTS, COMPLETIONS)  # rewards 0, 1, 0, ... by position in the group
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    rewards = torch.tensor([s.reward for g in groups for s in g])
    values = critic.values(batch)
    mask = batch.completion_mask_B_Lc
    advantages, returns = gae(outcome_token_rewards(rewards, mask), values, mask, 1.0, 1.0)
    return batch.__class__(**{**batch.__dict__, "advantages_B_Lc": advantages, "returns_B_Lc": returns,
                              "values_B_Lc": values})


def test_critic_starts_at_zero_and_learns_the_returns(tiny_model):
    critic = CriticClass(tiny_model, optim=OptimSpec(lr=3e-3), value_clip=None, epochs=20, threads=2)
    batch = ppo_batch(critic)
    assert torch.equal(batch.values_B_Lc, torch.zeros_like(batch.values_B_Lc))  # zero-initialised head
    first = critic.train_step(batch)
    assert first["critic/explained_variance"] == 0.0  # zero values explain nothing
    after = critic.values(batch)
    mask = batch.completion_mask_B_Lc
    assert (after[~mask] == 0).all()
    assert explained_variance(after, batch.returns_B_Lc, mask) > 0.5
    assert first["critic/value_loss"] > 0


def test_critic_trunk_loads_the_policy_weights(tiny_model):
    critic = CriticClass(tiny_model, optim=OptimSpec(lr=1e-3), threads=2)
    for p in critic.model.trunk.parameters():
        torch.nn.init.zeros_(p)
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)
    assert critic.load_policy_weights(learner.named_weights()) > 0
    lm = AutoModelForCausalLM.from_pretrained(tiny_model)
    for name, p in critic.model.trunk.state_dict().items():
        assert torch.equal(p, lm.base_model.state_dict()[name]), name
