"""policy_loss (torch closed form and Triton kernel) against the autograd reference: loss, gradients, metrics."""

import os

import torch

if not torch.cuda.is_available():  # before rlvr.kernels imports triton (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from rlvr.kernels import PolicyLossConfig, policy_loss, policy_loss_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.bfloat16: dict(atol=1e-6, rtol=1e-5)}  # math is fp32

CONFIGS = {
    "ppo": PolicyLossConfig(),
    "dapo-clip-higher": PolicyLossConfig(clip_low=0.2, clip_high=0.28),
    "dual-clip": PolicyLossConfig(dual_clip=2.0, aggregation="seq-mean-token-mean"),
    "gspo": PolicyLossConfig(ratio_level="sequence", clip_low=0.03, clip_high=0.04, aggregation="seq-mean-token-mean"),
    "grpo-kl-k3": PolicyLossConfig(kl_coef=0.04, aggregation="seq-mean-token-mean"),
    "kl-k1": PolicyLossConfig(kl_coef=0.1, kl_estimator="k1"),
    "kl-k2-gspo-dual": PolicyLossConfig(kl_coef=0.1, kl_estimator="k2", ratio_level="sequence", dual_clip=1.5),
    "dr-grpo": PolicyLossConfig(aggregation="seq-mean-token-sum-norm"),
    "dr-grpo-norm64-entropy": PolicyLossConfig(aggregation="seq-mean-token-sum-norm", norm_length=64, entropy_coef=0.01),
    "entropy-bonus": PolicyLossConfig(entropy_coef=0.02, clip_high=0.28, dual_clip=3.0),
}


def make_inputs(B=5, T=37, per_token_adv=False, dtype=torch.float32, seed=0):
    """Ragged masks (one sequence empty), log-ratios wide enough that every clip fires somewhere."""
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(B, T, generator=g) * 3
    old = logprobs + torch.randn(B, T, generator=g) * 0.6
    ref = logprobs + torch.randn(B, T, generator=g) * 0.4
    entropy = torch.rand(B, T, generator=g) * 2
    adv = torch.randn(B, T, generator=g) if per_token_adv else torch.randn(B, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[1] = 0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    logprobs = torch.where(mask, logprobs, 50.0)  # garbage in padding must not leak (exp(50 - old))
    logprobs, entropy = (x.to(dtype).to(DEVICE).requires_grad_() for x in (logprobs, entropy))
    return logprobs, old.to(DEVICE), adv.to(DEVICE), mask.to(DEVICE), ref.to(DEVICE), entropy


def run(fn, logprobs, old, adv, mask, ref, entropy, config, **kw):
    logprobs.grad = entropy.grad = None
    loss, metrics = fn(logprobs, old, adv, mask, config, ref, entropy, **kw)
    loss.backward()
    return loss.detach(), metrics, logprobs.grad, entropy.grad


def assert_matches(ours, ref, tol):
    (loss, metrics, d_lp, d_ent), (ref_loss, ref_metrics, ref_d_lp, ref_d_ent) = ours, ref
    torch.testing.assert_close(loss, ref_loss, **tol)
    torch.testing.assert_close(d_lp.float(), ref_d_lp.float(), **tol)
    assert (d_ent is None) == (ref_d_ent is None)
    if d_ent is not None:
        torch.testing.assert_close(d_ent, ref_d_ent, **tol)
    assert metrics.keys() == ref_metrics.keys()
    for name in metrics:
        assert metrics[name].shape == () and not metrics[name].requires_grad, name
        torch.testing.assert_close(metrics[name], ref_metrics[name], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("per_token_adv", [False, True], ids=["adv-B", "adv-B-T"])
@pytest.mark.parametrize("name", CONFIGS)
def test_matches_reference(name, per_token_adv, backend):
    inputs = make_inputs(per_token_adv=per_token_adv)
    ours = run(policy_loss, *inputs, CONFIGS[name], backend=backend)
    assert_matches(ours, run(policy_loss_reference, *inputs, CONFIGS[name]), TOL[torch.float32])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bf16_logprobs_and_no_optional_inputs(backend):
    logprobs, old, adv, mask, _, _ = make_inputs(dtype=torch.bfloat16, seed=3)
    loss, metrics = policy_loss(logprobs, old, adv, mask, CONFIGS["dapo-clip-higher"], backend=backend)
    loss.backward()
    assert logprobs.grad.dtype == torch.bfloat16 and "kl" not in metrics and "entropy" not in metrics
    d_lp = logprobs.grad.clone()
    logprobs.grad = None
    ref_loss, ref_metrics = policy_loss_reference(logprobs, old, adv, mask, CONFIGS["dapo-clip-higher"])
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, **TOL[torch.bfloat16])
    torch.testing.assert_close(d_lp, logprobs.grad)  # both rounded to bf16 from the same fp32 value
    assert metrics.keys() == ref_metrics.keys()


def test_every_clip_fires():
    """The test inputs exercise each branch: otherwise the equivalence tests prove little."""
    _, metrics, _, _ = run(policy_loss, *make_inputs(), CONFIGS["entropy-bonus"], backend="torch")
    assert metrics["clip_frac/low"] > 0 and metrics["clip_frac/high"] > 0 and metrics["clip_frac/dual"] > 0


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_add_up(aggregation, backend):
    """With the full batch's normalizer, micro-batch losses and gradients sum to the full-batch ones."""
    config = PolicyLossConfig(aggregation=aggregation, norm_length=37, kl_coef=0.05, dual_clip=3.0)
    logprobs, old, adv, mask, ref, entropy = make_inputs(B=6, seed=4)
    full, _, d_full, _ = run(policy_loss, logprobs, old, adv, mask, ref, entropy, config, backend=backend)
    lengths = mask.sum(1)
    normalizer = lengths.sum() if aggregation == "token-mean" else (lengths > 0).sum()
    total = 0.0
    for rows in (slice(0, 2), slice(2, 6)):
        lp = logprobs.detach()[rows].clone().requires_grad_()
        loss, _ = policy_loss(lp, old[rows], adv[rows], mask[rows], config, ref[rows], None, normalizer, backend=backend)
        loss.backward()
        total = total + loss.detach()
        torch.testing.assert_close(lp.grad, d_full[rows], **TOL[torch.float32])
    torch.testing.assert_close(total, full, **TOL[torch.float32])


def test_config_errors():
    logprobs, old, adv, mask, ref, entropy = make_inputs()
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(dual_clip=0.5))
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logprobs, old, adv[:2], mask, PolicyLossConfig())


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dual-clip", "gspo", "kl-k2-gspo-dual", "entropy-bonus"])
def test_large_on_gpu(name):
    inputs = make_inputs(B=256, T=4099, per_token_adv=True)
    assert_matches(run(policy_loss, *inputs, CONFIGS[name]), run(policy_loss_reference, *inputs, CONFIGS[name]),
                   dict(atol=1e-6, rtol=1e-4))  # fmt: skip
