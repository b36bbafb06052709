"""logits_logprobs (torch chunked path and Triton kernel) against its fp32 reference, forward and backward."""

import os

import torch

if not torch.cuda.is_available():  # before rlvr.kernels imports triton (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from rlvr.kernels import dispatch, logits_logprobs, logits_logprobs_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# vs the fp32 reference on the same logits; atol relative to the largest reference value (>= 1).
# The math is fp32 for both dtypes: bf16 only rounds the stored logits gradient (8-bit mantissa).
TOL = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.bfloat16: dict(atol=4e-3, rtol=8e-3)}
SHAPES = [(1, 37), (37, 37), (50, 101), (9, 5000)]  # (N, V): odd sizes, several 4096-wide tiles


def make_inputs(N, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * 3).to(dtype).to(DEVICE).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g).to(DEVICE)
    return logits, targets, torch.randn(2, N, generator=g).to(DEVICE)


def run(fn, logits, targets, upstream, temperature, use=(True, True), **kw):
    logits.grad = None
    outs = fn(logits, targets, temperature, **kw)
    sum(u @ out for u, out, on in zip(upstream, outs, use) if on).backward()
    return outs[0].detach(), outs[1].detach(), logits.grad


def assert_matches(ours, ref, dtype):
    for name, a, b in zip(("logprobs", "entropy", "d logits"), ours, ref):
        assert a.dtype == (dtype if name == "d logits" else torch.float32), name
        atol = TOL[dtype]["atol"] * max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=TOL[dtype]["rtol"], msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-V{}".format(*s))
def test_matches_reference(shape, temperature, dtype, backend, monkeypatch):
    monkeypatch.setattr(dispatch, "CHUNK_ELEMENTS", 3 * shape[1])  # several row chunks
    inputs = make_inputs(*shape, dtype)
    assert_matches(run(logits_logprobs, *inputs, temperature, backend=backend),
                   run(logits_logprobs_reference, *inputs, temperature), dtype)  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("use", [(True, False), (False, True)], ids=["logprobs-only", "entropy-only"])
def test_one_output_used(use, backend):
    inputs = make_inputs(37, 37, torch.float32, seed=1)
    assert_matches(run(logits_logprobs, *inputs, 1.3, use=use, backend=backend),
                   run(logits_logprobs_reference, *inputs, 1.3, use=use), torch.float32)  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_extreme_logits(backend):
    """-inf logits (masked vocabulary) and huge ones: finite results, no nan in the gradient."""
    logits, targets, upstream = make_inputs(5, 37, torch.float32, seed=2)
    with torch.no_grad():
        logits[:, 30:] = float("-inf")
        logits[0, 3] = 1e4
        targets[:] = 3
    ours = run(logits_logprobs, logits, targets, upstream, 1.0, backend=backend)
    assert all(torch.isfinite(x).all() for x in ours)
    # the reference's own backward is nan there (0 * -inf), so compare with it on the finite columns
    finite = logits.detach()[:, :30].clone().requires_grad_()
    ref = run(logits_logprobs_reference, finite, targets, upstream, 1.0)
    for a, b in zip(ours[:2], ref[:2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[2][:, :30], ref[2], atol=1e-5, rtol=1e-5)
    assert (ours[2][:, 30:] == 0).all()


def test_leading_dims():
    logits, targets, upstream = make_inputs(12, 37, torch.float32)
    lp, ent = logits_logprobs(logits.view(3, 4, 37), targets.view(3, 4))
    assert lp.shape == ent.shape == (3, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_large_on_gpu(dtype):
    inputs = make_inputs(2048, 151936, dtype)
    assert_matches(run(logits_logprobs, *inputs, 0.9), run(logits_logprobs_reference, *inputs, 0.9), dtype)
