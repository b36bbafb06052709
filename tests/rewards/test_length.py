"""Per-rollout length terms (length.py), hand-computed from each paper's formula."""

import pytest

from rlvr.rewards.length import OverlongPenalty, TargetLength, TruncationPenalty, token_budget
from rlvr.types import Rollout, Sample


def rollout(tokens: int, finish: str = "stop", prompt: str = "q", metadata=None, sample_id: str = "p") -> Rollout:
    return Rollout(Sample(sample_id, prompt, "5", metadata or {}), "x", finish, (0,) * tokens, (0.0,) * tokens, (), 0)


@pytest.mark.parametrize(("tokens", "expected"), [(0, 0.0), (80, 0.0), (90, -0.5), (100, -1.0), (101, -1.0)])
def test_overlong_dapo_eq13(tokens, expected):
    assert OverlongPenalty(max_tokens=100, buffer_tokens=20)(rollout(tokens)) == pytest.approx(expected)


def test_overlong_rejects_a_bad_buffer():
    with pytest.raises(ValueError, match="buffer_tokens"):
        OverlongPenalty(max_tokens=100, buffer_tokens=0)


def test_truncation():
    assert TruncationPenalty()(rollout(5, "length")) == -1.0
    assert TruncationPenalty()(rollout(5, "stop")) == 0.0


def test_target_length_budget_from_metadata_or_prompt():
    assert TargetLength(alpha=0.001)(rollout(1500, metadata={"target_tokens": 1000})) == pytest.approx(-0.5)
    assert TargetLength(alpha=0.001)(rollout(700, prompt="Solve it. Think for 1000 tokens.")) == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="Think for N tokens"):
        token_budget(rollout(10))
