"""Weights as plain data for the engine core's worker methods (rlvr/rollout/worker_extension.py)."""

import pytest
import torch

from rlvr.rollout.worker_extension import from_wire, to_wire


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tensors_cross_vllms_msgpack_without_pickle(monkeypatch, dtype):
    import vllm.envs
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    monkeypatch.setattr(vllm.envs, "VLLM_ALLOW_INSECURE_SERIALIZATION", False)
    named = {"a.weight": torch.randn(37, 5).to(dtype), "b.bias": torch.randn(3, 4).t().to(dtype)}  # b: not contiguous
    frames = MsgpackEncoder().encode(("rlvr_load_weights", (to_wire(named),)))
    _, (wire,) = MsgpackDecoder().decode(frames)
    back = from_wire(wire)
    assert [n for n, _ in back] == list(named)
    for (_, got), want in zip(back, named.values()):
        assert got.dtype == dtype and torch.equal(got, want)
