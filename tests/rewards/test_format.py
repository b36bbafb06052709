"""Format checks: think/answer tags and a boxed answer."""

import pytest

from rlvr.rewards.format import ThinkFormat, boxed_format
from rlvr.types import Rollout, Sample


def rollout(completion: str, answer: str, metadata=None, prompt: str = "q") -> Rollout:
    return Rollout(Sample("t", prompt, answer, metadata or {}), completion, "stop", (), (), (), 0)


FORMAT = [
    (ThinkFormat(), r"<think>2+2 is 4</think> \boxed{4}", 1.0),
    (ThinkFormat(), "<think>2+2 is 4</think>", 0.0),  # no answer after thinking
    (ThinkFormat(), "4", 0.0),
    (ThinkFormat(), "<think>a</think><think>b</think> 4", 0.0),
    (ThinkFormat(answer_tag=True), "<think>2+2</think>\n<answer>4</answer>", 1.0),
    (ThinkFormat(answer_tag=True), "<think>2+2</think> 4", 0.0),
    (ThinkFormat(opened_in_prompt=True), "2+2 is 4</think> 4", 1.0),
    (boxed_format, r"so \boxed{4}", 1.0),
    (boxed_format, r"so \boxed{}", 0.0),
    (boxed_format, r"so \boxed{4", 0.0),
]


@pytest.mark.parametrize(("reward", "completion", "expected"), FORMAT)
def test_format(reward, completion, expected):
    assert reward(rollout(completion, "4")) == expected
