import math

import pytest
import torch

from rlvr.algorithms.batch import PAD, make_train_batch
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


def scored(prompt, completion, reward):
    sample = Sample(id="s", prompt="p", answer="a")
    rollout = Rollout(sample, "x", "stop", tuple(completion), tuple(-0.5 * (i + 1) for i in range(len(completion))),
                      tuple(prompt), 0)
    return ScoredRollout(rollout, reward, {"t": TermResult(reward)})


def test_groups_share_their_prompt_row():
    groups = [[scored([1, 2, 3], [4, 5], 1.0), scored([1, 2, 3], [6], 0.0)], [scored([7], [8, 9, 10], 1.0)]]
    batch = make_train_batch(groups, [[0.5, -0.5], [0.0]])
    assert batch.prompts_P_Lp.tolist() == [[1, 2, 3], [PAD, PAD, 7]]  # left-padded
    assert batch.completions_B_Lc.tolist() == [[4, 5, PAD], [6, PAD, PAD], [8, 9, 10]]
    assert batch.prompt_index_B.tolist() == [0, 0, 1]
    assert batch.sampler_logprobs_B_Lc[2].tolist() == [-0.5, -1.0, -1.5]
    assert batch.sampler_logprobs_B_Lc[1].tolist() == [-0.5, 0.0, 0.0]
    assert batch.advantages_B_Lc.tolist() == [[0.5, 0.5, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]  # 0 at padding
    assert batch.num_completion_tokens == 6 and batch.num_prompts == 2


def test_failed_rewards_are_dropped_not_zeroed():
    groups = [[scored([1], [2], math.nan), scored([1], [3], 1.0)], [scored([4], [5], math.nan)]]
    batch = make_train_batch(groups, [[0.0, 1.0], [0.0]])
    assert batch.prompts_P_Lp.tolist() == [[1]] and batch.completions_B_Lc.tolist() == [[3]]


def test_select_prompts_remaps_and_trims():
    groups = [[scored([1, 2, 3], [4, 5, 6], 1.0)], [scored([7], [8], 0.0), scored([7], [9], 1.0)]]
    batch = make_train_batch(groups, [[1.0], [-1.0, 1.0]])
    sub = batch.select_prompts(torch.tensor([1]))
    assert sub.prompts_P_Lp.tolist() == [[7]] and sub.completions_B_Lc.tolist() == [[8], [9]]
    assert sub.prompt_index_B.tolist() == [0, 0] and sub.advantages_B_Lc.tolist() == [[-1.0], [1.0]]
    assert batch.rows_of(torch.tensor([1])).tolist() == [1, 2]


def test_all_failed_raises():
    with pytest.raises(ValueError, match="no rollout with a valid reward"):
        make_train_batch([[scored([1], [2], math.nan)]], [[0.0]])
