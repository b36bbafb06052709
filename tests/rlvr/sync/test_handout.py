"""The learner's side of weight sync (rlvr/sync/handout.py): every transport reads one weights seam."""

import pytest
import torch

from rlvr.sync.handout import WeightHandout


def test_named_weights_are_cpu_copies_in_the_engines_dtype():
    w = torch.nn.Parameter(torch.randn(3, 2))
    calls = []
    handout = WeightHandout(lambda: (calls.append(1), [("model.w", w)])[1], torch.bfloat16)
    named = handout.named_weights()
    assert calls == [1] and list(named) == ["model.w"]
    assert named["model.w"].dtype == torch.bfloat16 and torch.equal(named["model.w"], w.detach().bfloat16())
    named["model.w"].zero_()
    assert w.abs().sum() > 0  # a copy, not a view of the learner's parameter


def test_send_before_the_group_is_open_is_an_error():
    handout = WeightHandout(lambda: [], torch.float32)
    handout.unlink_shared()  # nothing written yet: nothing to unlink
    with pytest.raises(RuntimeError, match="open_sender"):
        handout.send()
