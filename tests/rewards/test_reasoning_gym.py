"""`reasoning_gym`: reasoning-gym's own scorer on the answer pulled out of the completion."""

import pytest
import reasoning_gym

from rlvr.rewards.reasoning_gym import reasoning_gym_score
from rlvr.types import Rollout, Sample


def rollout(completion: str, answer: str, metadata=None, prompt: str = "q") -> Rollout:
    return Rollout(Sample("t", prompt, answer, metadata or {}), completion, "stop", (), (), (), 0)


def test_reasoning_gym_uses_the_datasets_own_scorer():
    entry = reasoning_gym.create_dataset("chain_sum", size=1, seed=0)[0]
    meta = entry["metadata"]
    for completion, expected in [(entry["answer"], 1.0), (f"<answer>{entry['answer']}</answer>", 1.0),
                                 (rf"so \boxed{{{entry['answer']}}}", 1.0), ("12", 0.0)]:
        assert reasoning_gym_score(rollout(completion, entry["answer"], meta, entry["question"])) == expected


def test_a_sample_without_source_dataset_is_an_error():
    with pytest.raises(ValueError, match="source_dataset"):
        reasoning_gym_score(rollout("1", "1"))
