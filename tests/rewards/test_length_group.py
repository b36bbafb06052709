"""Group length shapers (length_group.py), hand-computed from each paper's formula."""

import math

import pytest

from rlvr.rewards.length_group import CosineLength, L1Max, drpo_length, kimi_length
from rlvr.types import Rollout, Sample

NAN = math.nan


def rollout(tokens: int, finish: str = "stop", prompt: str = "q", metadata=None, sample_id: str = "p") -> Rollout:
    return Rollout(Sample(sample_id, prompt, "5", metadata or {}), "x", finish, (0,) * tokens, (0.0,) * tokens, (), 0)


def group(*tokens: int) -> list[Rollout]:
    return [rollout(n) for n in tokens]


def test_l1_max_is_gated_by_correctness_and_clipped():
    shaper = L1Max(alpha=0.001, delta=0.5)
    rollouts = [rollout(n, metadata={"target_tokens": 1000}) for n in (400, 1200, 2000, 100)]
    assert shaper(rollouts, [1.0, 1.0, 1.0, 0.0]) == pytest.approx([1.0, 0.3, 0.0, 0.0])


def test_cosine_length():
    cos = CosineLength(max_tokens=100)  # paper defaults: correct 2 -> 1, wrong -10 -> 0, exceed -10
    values = cos([rollout(0), rollout(50), rollout(100), rollout(0), rollout(50), rollout(30, "length")],
                 [1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    assert values == pytest.approx([2.0, 1.5, -10.0, -10.0, -5.0, -10.0])
    assert math.isnan(cos([rollout(10)], [NAN])[0])


def test_kimi_length():
    assert kimi_length(group(100, 200, 300), [1.0, 1.0, 1.0]) == pytest.approx([0.5, 0.0, -0.5])
    assert kimi_length(group(100, 200, 300), [0.0, 0.0, 0.0]) == pytest.approx([0.0, 0.0, -0.5])  # min(0, lambda)
    assert kimi_length(group(100, 100), [1.0, 0.0]) == [0.0, 0.0]  # equal lengths
    assert math.isnan(kimi_length(group(100, 200), [NAN, 1.0])[0])


def test_drpo_length_never_gives_a_correct_rollout_a_negative_advantage():
    lengths, correct = (100, 400, 1000, 50, 60), [1.0, 1.0, 1.0, 0.0, 0.0]
    shaped = drpo_length(group(*lengths), correct)
    p = 3 / 5
    assert shaped == pytest.approx([(1 - p) * (500 - n) / 900 for n in (100, 400, 1000)] + [0.0, 0.0])
    assert sum(shaped) == pytest.approx(0.0)  # the group mean reward is unchanged
    rewards = [c + s for c, s in zip(correct, shaped)]  # correctness weight 1, this term weight 1
    mean = sum(rewards) / len(rewards)
    assert all(r >= mean - 1e-12 for r, c in zip(rewards, correct) if c == 1.0)  # GRPO advantage >= 0
    assert rewards[0] > rewards[1] > rewards[2]  # shorter correct answers get more


def test_drpo_length_edge_cases():
    assert drpo_length(group(100, 200), [1.0, 1.0]) == [0.0, 0.0]  # all correct: p = 1, no signal
    assert drpo_length(group(100, 200), [0.0, 0.0]) == [0.0, 0.0]
    out = drpo_length(group(100, 300, 50), [1.0, 1.0, NAN])  # the failed rollout is left out of p
    assert out[:2] == [0.0, 0.0] and math.isnan(out[2])
