"""linear_logprobs (torch chunked path and Triton kernel) against its fp32 reference, forward and backward."""

import os

import torch

if not torch.cuda.is_available():  # before rlvr.kernels imports triton (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from rlvr.kernels import dispatch, linear_logprobs, linear_logprobs_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Outputs and gradients vs the fp32 reference on the same (rounded) inputs; atol is relative to the
# tensor's largest reference value (at least 1), since a gradient's small entries come from sums of
# large terms. fp32: a few ulps of those sums. bf16: the logits matmul rounds to bf16 (8 bits of
# mantissa, 0.4%) and the gradients are stored in bf16, so ~1% of the largest value.
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=1.5e-2, rtol=1e-2)}
# (N, H, V): one row; N and V not multiples of the 16-wide interpreter tiles, V = 37 as in prime-rl.
SHAPES = [(1, 16, 37), (37, 24, 37), (50, 40, 101)]


def make_inputs(N, H, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g)
    weight = torch.randn(V, H, generator=g) * (3 / H**0.5)  # logits ~ N(0, 9): peaked and flat rows
    targets = torch.randint(0, V, (N,), generator=g)
    upstream = torch.randn(2, N, generator=g)
    hidden, weight = (x.to(dtype).to(DEVICE).requires_grad_() for x in (hidden, weight))
    return hidden, weight, targets.to(DEVICE), upstream.to(DEVICE)


def run(fn, hidden, weight, targets, upstream, temperature, use=(True, True), **kw):
    hidden.grad = weight.grad = None
    logprobs, entropy = fn(hidden, weight, targets, temperature, **kw)
    loss = sum(u @ out for u, out, on in zip(upstream, (logprobs, entropy), use) if on)
    loss.backward()
    return logprobs.detach(), entropy.detach(), hidden.grad, weight.grad


def assert_close(name, a, b, dtype):
    atol = TOL[dtype]["atol"] * max(1.0, b.abs().max().item())
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=TOL[dtype]["rtol"], msg=lambda m: f"{name}: {m}")


def assert_matches(ours, ref, dtype):
    for name, a, b in zip(("logprobs", "entropy", "d hidden", "d weight"), ours, ref):
        assert a.dtype == (torch.float32 if name in ("logprobs", "entropy") else dtype), name
        assert_close(name, a, b, dtype)


@pytest.fixture
def small_chunks(monkeypatch):
    """Force several row and vocabulary chunks on these tiny shapes."""
    monkeypatch.setattr(dispatch, "CHUNK_ELEMENTS", 300)
    monkeypatch.setattr(dispatch, "MIN_CHUNK_COLS", 16)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-H{}-V{}".format(*s))
def test_matches_reference(shape, temperature, dtype, backend, small_chunks):
    inputs = make_inputs(*shape, dtype)
    ours = run(linear_logprobs, *inputs, temperature, backend=backend)
    ref = run(linear_logprobs_reference, *inputs, temperature)
    assert_matches(ours, ref, dtype)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("use", [(True, False), (False, True)], ids=["logprobs-only", "entropy-only"])
def test_one_output_used(use, backend, small_chunks):
    """The unused output's gradient arrives as None and its work is skipped; the rest is unchanged."""
    inputs = make_inputs(37, 24, 37, torch.float32, seed=1)
    ours = run(linear_logprobs, *inputs, 1.3, use=use, backend=backend)
    ref = run(linear_logprobs_reference, *inputs, 1.3, use=use)
    assert_matches(ours, ref, torch.float32)


def test_frozen_weight_and_leading_dims(small_chunks):
    hidden, weight, targets, upstream = make_inputs(24, 16, 37, torch.float32, seed=2)
    weight = weight.detach()
    logprobs, entropy = linear_logprobs(hidden.view(4, 6, 16), weight, targets.view(4, 6), backend="torch")
    assert logprobs.shape == entropy.shape == (4, 6)
    (upstream[0] @ logprobs.reshape(-1)).backward()
    grad = hidden.grad.clone()
    hidden.grad = None
    ref, _ = linear_logprobs_reference(hidden, weight, targets)
    (upstream[0] @ ref).backward()
    assert_close("d hidden", grad, hidden.grad, torch.float32)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_tokens(backend):
    hidden, weight, targets, _ = make_inputs(0, 16, 37, torch.float32)
    logprobs, entropy = linear_logprobs(hidden, weight, targets, backend=backend)
    assert logprobs.shape == entropy.shape == (0,)
    (logprobs.sum() + entropy.sum()).backward()
    assert not weight.grad.any()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_caller_autocast_does_not_lower_precision(backend, small_chunks):
    """The learner calls under torch.autocast(bf16); fp32 inputs must still get fp32 results."""
    hidden, weight, targets, upstream = make_inputs(37, 24, 37, torch.float32, seed=3)

    def under_autocast(*args, **kw):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            return linear_logprobs(*args, **kw)

    ours = run(under_autocast, hidden, weight, targets, upstream, 1.0, backend=backend)
    assert_matches(ours, run(linear_logprobs_reference, hidden, weight, targets, upstream, 1.0), torch.float32)


class MaxNumel(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_torch_path_never_materialises_logits(monkeypatch):
    N, H, V = 128, 16, 1000
    monkeypatch.setattr(dispatch, "CHUNK_ELEMENTS", 8 * V)
    hidden, weight, targets, upstream = make_inputs(N, H, V, torch.float32)
    with MaxNumel() as mode:
        run(linear_logprobs, hidden, weight, targets, upstream, 1.0, backend="torch")
    assert mode.max_numel <= max(8 * V, V * H)  # a chunk, or the weight's own gradient
    assert mode.max_numel < N * V / 4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(4096, 896, 151936), (1000, 1024, 32003)], ids=["qwen-vocab", "odd"])
def test_large_on_gpu(shape, dtype):
    inputs = make_inputs(*shape, dtype)
    ours = run(linear_logprobs, *inputs, 0.9)
    ref = run(linear_logprobs_reference, *inputs, 0.9)
    assert_matches(ours, ref, dtype)
