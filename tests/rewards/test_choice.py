"""`choice`: multiple-choice letters."""

import pytest

from rlvr.rewards.choice import MultipleChoice
from rlvr.types import Rollout, Sample


def rollout(completion: str, answer: str, metadata=None, prompt: str = "q") -> Rollout:
    return Rollout(Sample("t", prompt, answer, metadata or {}), completion, "stop", (), (), (), 0)


CHOICE = [("... so the answer is (C).", "C", 1.0), (r"\boxed{\text{(B)}}", "(B)", 1.0), ("Answer: D", "B", 0.0),
          ("B", "B", 1.0), ("I think A is wrong, and the final answer is B.", "B", 1.0), ("no idea", "A", 0.0)]


@pytest.mark.parametrize(("completion", "answer", "expected"), CHOICE)
def test_choice(completion, answer, expected):
    assert MultipleChoice()(rollout(completion, answer)) == expected


def test_gold_must_be_a_choice():
    with pytest.raises(ValueError, match="not in ABCD"):
        MultipleChoice()(rollout("A", "E"))
