import math

import pytest
import torch

from rlvr.batch import PAD, make_train_batch
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


def scored(prompt, completion, reward):
    sample = Sample(id="s", prompt="p", answer="a")
    rollout = Rollout(sample, "x", "stop", tuple(completion), tuple(-0.5 * (i + 1) for i in range(len(completion))),
                      tuple(prompt), 0)
    return ScoredRollout(rollout, reward, {"t": TermResult(reward)})


def test_packs_and_masks():
    batch = make_train_batch([scored([1, 2, 3], [4, 5], 1.0), scored([1], [6, 7, 8], 0.0)], [0.5, -0.5])
    assert batch.tokens_B_L.tolist() == [[1, 2, 3, 4, 5], [1, 6, 7, 8, PAD]]
    assert batch.completion_mask_B_L.tolist() == [[False, False, False, True, True], [False, True, True, True, False]]
    assert batch.sampler_logprobs_B_L[1, 1:4].tolist() == [-0.5, -1.0, -1.5]
    assert batch.advantages_B.tolist() == [0.5, -0.5]
    assert batch.num_completion_tokens == 5


def test_failed_rewards_are_dropped_not_zeroed():
    batch = make_train_batch([scored([1], [2], math.nan), scored([1], [3], 1.0)], [0.0, 1.0])
    assert len(batch) == 1 and batch.tokens_B_L.tolist() == [[1, 3]]


def test_select_trims_padding():
    batch = make_train_batch([scored([1, 2, 3], [4, 5], 1.0), scored([1], [6], 0.0)], [1.0, -1.0])
    sub = batch.select(torch.tensor([1]))
    assert sub.tokens_B_L.tolist() == [[1, 6]] and sub.advantages_B.tolist() == [-1.0]


def test_all_failed_raises():
    with pytest.raises(ValueError, match="no rollout with a valid reward"):
        make_train_batch([scored([1], [2], math.nan)], [0.0])
