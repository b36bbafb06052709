"""The fused Triton loss against the torch loss table (rlvr/algorithms/losses.py): loss, gradients, statistics.

One case table drives both implementations: every policy, KL estimator, mismatch mode and aggregation
appears at least once, plus a few combinations, the log-ratio overflow of an all-equal GRPO group and
Dr. GRPO's constant divisor. Shapes are ragged (T = 37, not a multiple of the block; an empty sequence;
garbage in the padding). On CPU the kernel runs in Triton's interpreter (tests/conftest.py sets it).
"""

import dataclasses
import math
import os

import torch

if not torch.cuda.is_available():  # before rlvr.kernels imports triton (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from rlvr.algorithms.losses import AGGREGATIONS, KL_ESTIMATORS, MISMATCH_CORRECTIONS, POLICY_LOSSES, LossInputs
from rlvr.config import LossConfig
from rlvr.kernels import fused_loss
from rlvr.kernels.fused_loss import policy_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(atol=1e-6, rtol=1e-5)  # fp32 throughout: only summation order differs


@dataclasses.dataclass(frozen=True)
class Case:
    loss: LossConfig
    mismatch: str = "none"
    entropy_coef: float = 0.0
    norm_length: int = 16
    ref: bool = True  # reference log-probs given (the `kl` metric; the KL term when kl_coef > 0)
    weights: bool = False  # per-token weights
    overflow: bool = False  # log-ratio 99.9 with advantage 0 on every token of one sequence


L = LossConfig
CASES = {
    "ppo-k3-tis": Case(L(kl_coef=0.05), "tis"),
    "dapo-clip-higher-dual-k1": Case(L(clip_high=0.28, dual_clip=2.0, kl_coef=0.1, kl_estimator="k1"), "mis"),
    "gspo-k2-tis-seq": Case(L(policy="gspo", clip_low=0.03, clip_high=0.04, aggregation="seq-mean-token-mean",
                              kl_coef=0.1, kl_estimator="k2"), "tis_seq"),
    "gspo-dual-entropy": Case(L(policy="gspo", dual_clip=1.5, aggregation="seq-mean-token-sum-norm"), "mis_seq",
                              entropy_coef=0.02),
    "cispo-k3+-weights": Case(L(policy="cispo", clip_high=4.0, kl_coef=0.1, kl_estimator="k3+"), "tis",
                              weights=True),
    "gppo-entropy-mis": Case(L(policy="gppo", aggregation="seq-mean-token-mean"), "mis", entropy_coef=0.01),
    "dr-grpo-constant-divisor": Case(L(aggregation="seq-mean-token-sum-norm"), norm_length=64, ref=False),
    "overflow-adv-0": Case(L(kl_coef=0.04), "tis", entropy_coef=0.01, overflow=True),
    "overflow-adv-0-gppo": Case(L(policy="gppo", aggregation="seq-mean-token-mean"), "tis_seq", overflow=True),
    "negative-entropy-coef-mis-seq": Case(L(policy="cispo", aggregation="seq-mean-token-sum-norm"), "mis_seq",
                                          entropy_coef=-0.03, weights=True),
}


def make_inputs(case: Case, B=5, T=37, seed=0) -> tuple[LossInputs, torch.Tensor, torch.Tensor]:
    """Ragged masks (sequence 1 empty), log-ratios wide enough that every clip and correction fires."""
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(B, T, generator=g) * 3
    # per-sequence shifts too, so that sequence-level ratios (gspo, tis_seq, mis_seq) clip and mask as well
    old = logprobs + torch.randn(B, T, generator=g) * 0.6 + torch.randn(B, 1, generator=g) * 0.5
    sampler = old + torch.randn(B, T, generator=g) * 0.5 + torch.randn(B, 1, generator=g) * 0.8
    ref = logprobs + torch.randn(B, T, generator=g) * 0.4
    entropy = torch.rand(B, T, generator=g) * 2
    adv = torch.randn(B, generator=g)[:, None].expand(B, T) + 0.3 * torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[1], lengths[3] = 0, T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    if case.overflow:  # an all-equal GRPO group: advantage 0, and a log-ratio that would overflow exp()
        old[3] = logprobs[3] - 99.9
        ref[3] = logprobs[3] + 99.9
        adv = adv.clone()
        adv[3] = 0.0
    logprobs = torch.where(mask, logprobs, 50.0)  # garbage in the padding must not leak (exp(50 - old))
    weights = torch.rand(B, T, generator=g) * 2 if case.weights else None
    lp, ent = (t.to(DEVICE).requires_grad_() for t in (logprobs, entropy))
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    x = LossInputs(lp, to(old), to(sampler), to(adv.contiguous()), to(mask), normalizer=float(mask.sum()) + 3.0,
                   weights_B_T=to(weights), ref_logprobs_B_T=to(ref) if case.ref else None, entropy_B_T=ent)
    return x, lp, ent


def run(case: Case, kernel: str):
    x, lp, ent = make_inputs(case)
    cfg = dataclasses.replace(case.loss, kernel=kernel)
    loss, stats = policy_loss(cfg, x, entropy_coef=case.entropy_coef, mismatch=case.mismatch,
                              norm_length=case.norm_length)
    loss.backward()
    return loss.detach(), stats, lp.grad, ent.grad


@pytest.mark.parametrize("name", CASES)
def test_triton_matches_the_torch_table(name):
    case = CASES[name]
    loss, stats, d_lp, d_ent = run(case, "triton")
    ref_loss, ref_stats, ref_d_lp, ref_d_ent = run(case, "torch")
    assert torch.isfinite(loss) and torch.isfinite(d_lp).all()
    torch.testing.assert_close(loss, ref_loss, **TOL)
    torch.testing.assert_close(d_lp, ref_d_lp, **TOL)
    assert (d_ent is None) == (ref_d_ent is None)
    if d_ent is not None:
        torch.testing.assert_close(d_ent, ref_d_ent, **TOL)
    assert stats.tokens == ref_stats.tokens
    for ours, theirs in ((stats.sums, ref_stats.sums), (stats.losses, ref_stats.losses), (stats.maxima, ref_stats.maxima)):
        assert list(ours) == list(theirs)
        for key in ours:
            assert math.isfinite(ours[key]), key
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key


def test_the_case_table_covers_every_entry():
    used = lambda f: {f(c) for c in CASES.values()}  # noqa: E731
    assert used(lambda c: c.loss.policy) == set(POLICY_LOSSES)
    assert used(lambda c: c.loss.kl_estimator if c.ref and c.loss.kl_coef > 0 else None) - {None} == set(KL_ESTIMATORS)
    assert used(lambda c: c.mismatch) == set(MISMATCH_CORRECTIONS) | {"none"}
    assert used(lambda c: c.loss.aggregation) == set(AGGREGATIONS)
    assert any(c.overflow for c in CASES.values()) and any(c.loss.dual_clip for c in CASES.values())


def test_kernel_codes_name_every_table_entry():
    assert set(fused_loss.POLICY_CODES) == set(POLICY_LOSSES)
    assert set(fused_loss.KL_CODES) == set(KL_ESTIMATORS)
    assert set(fused_loss.MISMATCH_CODES) == set(MISMATCH_CORRECTIONS) | {"none"}
    assert set(fused_loss.AGGREGATION_CODES) == set(AGGREGATIONS)


def test_overflow_gives_the_clamped_ratio_and_no_nan():
    """log pi - log pi_old = 99.9 with A = 0: the loss is finite and the sequence's ratio is e^20, not inf."""
    _, stats, d_lp, _ = run(CASES["overflow-adv-0"], "triton")
    assert stats.maxima["ratio/max"] == pytest.approx(math.exp(20.0), rel=1e-6)
    assert torch.isfinite(d_lp).all() and all(math.isfinite(v) for v in stats.result().values())


def test_constant_divisor_does_not_depend_on_the_padding():
    """Dr. GRPO: the same sequences padded to another T give the same loss (norm_length, not T, divides)."""
    case = CASES["dr-grpo-constant-divisor"]
    x, _, _ = make_inputs(case)
    cfg = dataclasses.replace(case.loss, kernel="triton")
    wide = dataclasses.replace(x, **{f.name: torch.cat([v, v[:, :9]], 1) if f.name != "mask_B_T"
                                     else torch.cat([v, torch.zeros_like(v[:, :9])], 1)
                                     for f in dataclasses.fields(x) if isinstance(v := getattr(x, f.name), torch.Tensor)})
    a, _ = policy_loss(cfg, x, norm_length=case.norm_length)
    b, _ = policy_loss(cfg, wide, norm_length=case.norm_length)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-6)


def test_auto_is_the_torch_table_on_cpu_tensors():
    if DEVICE == "cuda":
        pytest.skip("auto runs the kernel on CUDA")
    x, _, _ = make_inputs(CASES["ppo-k3-tis"])
    from rlvr.algorithms.losses import compute_loss

    cfg = CASES["ppo-k3-tis"].loss
    assert cfg.kernel == "auto"
    a, sa = policy_loss(cfg, x, mismatch="tis")
    b, sb = compute_loss(cfg, x, mismatch="tis")
    assert float(a) == float(b) and sa.sums == sb.sums  # bit for bit: the same code
