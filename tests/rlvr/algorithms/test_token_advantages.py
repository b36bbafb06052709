"""Per-token advantage terms (rlvr/algorithms/token_advantages.py): distillation's addend and metric."""

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch

from rlvr.algorithms.batch import make_train_batch
from rlvr.algorithms.token_advantages import Distillation

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402


def test_distillation_adds_coef_times_the_teacher_gap_on_the_mask():
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    mask = batch.completion_mask_B_Lc
    old = torch.full(mask.shape, math.log(0.5))
    batch = dataclasses.replace(batch, teacher_logprobs_B_Lc=torch.full(mask.shape, math.log(0.25)))
    addend, sums = Distillation(coef=2.0)(batch, old, mask)
    # coef (log pi_T - log pi_old) = 2 log 0.5 on every completion token, 0 at padding
    assert torch.allclose(addend[mask], torch.full((int(mask.sum()),), 2 * math.log(0.5)))
    assert (addend[~mask] == 0).all()
    assert sums["distill/tokens"] == mask.sum()
    assert Distillation(2.0).metrics(sums)["distill/kl"] == pytest.approx(math.log(2))  # nats/token
    assert Distillation(2.0).metrics({}) == {}


def test_distillation_without_the_teachers_logprobs_is_an_error():
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    with pytest.raises(ValueError, match="teacher"):
        Distillation(1.0)(batch, torch.zeros(batch.completion_mask_B_Lc.shape), batch.completion_mask_B_Lc)
