"""The loss table's per-token objective as one fused Triton kernel, with its statistics.

    loss, stats = policy_loss(cfg.loss, inputs, entropy_coef=coef, mismatch="tis", norm_length=16)

The same contract as `rlvr.algorithms.losses.compute_loss`, which is the reference (the formulas and papers
are in that module's docstring): every policy of `POLICY_LOSSES` (ppo_clip with decoupled and dual clip,
gspo's sequence ratio, cispo, gppo), the KL term (`KL_ESTIMATORS`), the entropy bonus, the mismatch weights
(`MISMATCH_CORRECTIONS`), the per-token weights and the +-LOG_RATIO_CLAMP clamp, aggregated
(`AGGREGATIONS`, Dr. GRPO's constant norm_length) and divided by the normaliser passed in.

One program per sequence, two passes over its tokens: the first sums what is per sequence (its length,
gspo's mean log-ratio, tis_seq's / mis_seq's log-weight), the second writes each token's gradient
d loss / d log pi and d loss / d H in closed form and the sequence's statistics. The gradient is
elementwise, so the forward writes it and the backward only scales it by the upstream gradient: one
[B, T] fp32 buffer per differentiable input is kept instead of the six inputs.

Derivatives mirror autograd on the table exactly, ties included: torch.clamp passes the gradient on its
closed range, torch.maximum / torch.minimum split it in half on a tie (the dual clip's cap), the ratio
of gspo is sg[s] pi / sg[pi] (no clamp on its gradient path), cispo's and gppo's clipped weights are
stop-gradient. Masked tokens get a zero gradient and add nothing, whatever garbage they hold.

Four parts: the reference (`compute_loss`, torch), `_loss_kernel` (Triton), `FusedPolicyLoss` (autograd)
and `policy_loss`, which runs the kernel when `loss.kernel` says so ("auto": on CUDA tensors) and the
torch table otherwise. On CPU, "triton" needs the interpreter (TRITON_INTERPRET=1 before import).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlvr.algorithms.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LOG_RATIO_CLAMP,
    MISMATCH_CORRECTIONS,
    POLICY_LOSSES,
    LossInputs,
    LossStats,
    compute_loss,
)
from rlvr.config import LossConfig
from rlvr.kernels.dispatch import no_autocast, next_power_of_2, use_triton

# The kernel's constexpr codes of the table names (tests check they cover every table entry).
POLICY_CODES = {"ppo_clip": 0, "gspo": 1, "cispo": 2, "gppo": 3}
KL_CODES = {"k1": 0, "k2": 1, "k3": 2, "k3+": 3}
MISMATCH_CODES = {"none": 0, "tis": 1, "tis_seq": 2, "mis": 3, "mis_seq": 4}
AGGREGATION_CODES = {"token-mean": 0, "seq-mean-token-mean": 1, "seq-mean-token-sum-norm": 2}

# Columns of the per-sequence statistics [B, NSTAT] (fp32): sums over the sequence's masked tokens, the
# loss parts already weighted and scaled by the aggregation (not yet divided by the normaliser).
PG, KL_PART, ENT_PART, TOKENS, LOW, HIGH, DUAL, IS_FLAG, RATIO_SUM, RATIO_MAX, APPROX_KL, KL_SUM, ENT_SUM = range(13)
NSTAT = 16
MAX_BLOCK_T = 1024  # a CUDA program's token tile; the interpreter takes small ones (it runs numpy per op)
INTERPRETED_BLOCK_T = 32


@triton.jit
def _tile(ptr, row, ts, ok):
    """One sequence's token tile of a [B, T] input, in fp32; 0 past the sequence's end."""
    return tl.load(ptr + row + ts, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _loss_kernel(
    lp_ptr, old_ptr, sampler_ptr, adv_ptr, mask_ptr, w_ptr, ref_ptr, ent_ptr, grad_lp_ptr, grad_ent_ptr, stats_ptr,
    T, clip_lo, clip_hi, dual_c, kl_coef, ent_coef, is_cap, is_low, is_high, norm_length, clamp,
    POLICY: tl.constexpr, DUAL_CLIP: tl.constexpr, HAS_REF: tl.constexpr, KL_TERM: tl.constexpr,
    KL_EST: tl.constexpr, HAS_ENT: tl.constexpr, ENT_TERM: tl.constexpr, MISMATCH: tl.constexpr,
    HAS_W: tl.constexpr, AGG: tl.constexpr, NSTAT_: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    row = b.to(tl.int64) * T
    # Pass 1: the sequence's length, sum of clamped log-ratios (gspo) and of clamped log mismatch weights.
    length = 0.0
    lr_sum = 0.0
    mis_sum = 0.0
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        ok = ts < T
        valid = tl.load(mask_ptr + row + ts, mask=ok, other=0) != 0
        length += tl.sum(valid.to(tl.float32), axis=0)
        if POLICY == 1:
            lp = _tile(lp_ptr, row, ts, ok)
            old = _tile(old_ptr, row, ts, ok)
            lr_sum += tl.sum(tl.minimum(tl.maximum(tl.where(valid, lp - old, 0.0), -clamp), clamp), axis=0)
        if MISMATCH == 2 or MISMATCH == 4:
            old = _tile(old_ptr, row, ts, ok)
            smp = _tile(sampler_ptr, row, ts, ok)
            mis_sum += tl.sum(tl.minimum(tl.maximum(tl.where(valid, old - smp, 0.0), -clamp), clamp), axis=0)
    if AGG == 0:  # token-mean
        scale = 1.0
    elif AGG == 1:  # seq-mean-token-mean
        scale = 1.0 / tl.maximum(length, 1.0)
    else:  # seq-mean-token-sum-norm: Dr. GRPO's one constant
        scale = 1.0 / norm_length
    seq_ratio = tl.exp(lr_sum / tl.maximum(length, 1.0))  # gspo's s_i
    if MISMATCH == 2:
        seq_w = tl.exp(tl.minimum(mis_sum, clamp))
    else:
        seq_w = tl.exp(mis_sum / tl.maximum(length, 1.0))

    acc_pg = 0.0
    acc_kl = 0.0
    acc_ent = 0.0
    n_low = 0.0
    n_high = 0.0
    n_dual = 0.0
    n_is = 0.0
    ratio_sum = 0.0
    ratio_max = 0.0
    approx_kl = 0.0
    kl_sum = 0.0
    ent_sum = 0.0
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        ok = ts < T
        valid = tl.load(mask_ptr + row + ts, mask=ok, other=0) != 0
        lp = _tile(lp_ptr, row, ts, ok)
        old = _tile(old_ptr, row, ts, ok)
        adv = _tile(adv_ptr, row, ts, ok)
        raw = tl.where(valid, lp - old, 0.0)
        rho = tl.minimum(tl.maximum(raw, -clamp), clamp)
        passes = valid & (raw >= -clamp) & (raw <= clamp)  # clamp's gradient
        token_ratio = tl.exp(rho)
        approx_kl += tl.sum(tl.where(valid, token_ratio - 1.0 - rho, 0.0), axis=0)
        lo_r = tl.minimum(tl.maximum(token_ratio, clip_lo), clip_hi)
        if POLICY == 2:  # cispo: -sg[clip(r)] A log pi
            ratio = token_ratio
            pg = -lo_r * adv * lp
            grad = -lo_r * adv
            low = ratio < clip_lo
            high = ratio > clip_hi
        elif POLICY == 3:  # gppo: where clipped, r sg[clip(r) / r]: value clip(r), gradient kept
            ratio = token_ratio
            low = (adv < 0) & (ratio < clip_lo)
            high = (adv > 0) & (ratio > clip_hi)
            bound = lo_r / ratio
            pg = -adv * tl.where(low | high, ratio * bound, ratio)
            grad = tl.where(passes, -adv * tl.where(low | high, bound, 1.0) * ratio, 0.0)
        else:  # ppo_clip, gspo: max(-A r, -A clip(r)), optionally capped at -c A for A < 0
            if POLICY == 1:
                ratio = tl.zeros_like(lp) + seq_ratio
                through = valid  # sg[s] pi / sg[pi]: d r / d log pi = r, no clamp on the path
            else:
                ratio = token_ratio
                through = passes
            clipped = tl.minimum(tl.maximum(ratio, clip_lo), clip_hi)
            unclipped_loss = -adv * ratio
            clipped_loss = -adv * clipped
            pg = tl.maximum(unclipped_loss, clipped_loss)
            in_range = (ratio >= clip_lo) & (ratio <= clip_hi)
            # torch.maximum: the larger side's gradient, half each on a tie (then both sides agree here)
            d_ratio = tl.where(unclipped_loss > clipped_loss, -adv,
                               tl.where(unclipped_loss < clipped_loss, tl.where(in_range, -adv, 0.0),
                                        0.5 * -adv + 0.5 * tl.where(in_range, -adv, 0.0)))
            low = (adv < 0) & (ratio < clip_lo)
            high = (adv > 0) & (ratio > clip_hi)
            if DUAL_CLIP:
                cap = -adv * dual_c
                dual = (adv < 0) & (pg > cap)
                keep = tl.where(pg < cap, 1.0, tl.where(pg == cap, 0.5, 0.0))  # torch.minimum, ties halved
                d_ratio = tl.where(adv < 0, d_ratio * keep, d_ratio)
                pg = tl.where(adv < 0, tl.minimum(pg, cap), pg)
                n_dual += tl.sum((valid & dual).to(tl.float32), axis=0)
            grad = tl.where(through, d_ratio * ratio, 0.0)

        # The mismatch weight pi_old / pi_sampler (a constant of log pi) and the per-token weight.
        if MISMATCH == 0:
            weight = tl.full(lp.shape, 1.0, tl.float32)
        else:
            if MISMATCH == 1 or MISMATCH == 3:
                smp = _tile(sampler_ptr, row, ts, ok)
                mw = tl.exp(tl.minimum(tl.maximum(tl.where(valid, old - smp, 0.0), -clamp), clamp))
            else:
                mw = tl.zeros_like(lp) + seq_w
            if MISMATCH <= 2:  # tis, tis_seq: truncated
                flag = mw > is_cap
                weight = tl.minimum(mw, is_cap)
            else:  # mis, mis_seq: masked outside [is_low, is_high]
                flag = (mw < is_low) | (mw > is_high)
                weight = tl.where(flag, 0.0, 1.0)
            n_is += tl.sum((valid & flag).to(tl.float32), axis=0)
        if HAS_W:
            weight = weight * _tile(w_ptr, row, ts, ok)
        weight = tl.where(valid, weight, 0.0)

        acc_pg += tl.sum(tl.where(valid, pg * weight, 0.0), axis=0)
        g = grad
        if HAS_REF:
            ref = _tile(ref_ptr, row, ts, ok)
            d_raw = ref - lp
            d = tl.minimum(tl.maximum(d_raw, -clamp), clamp)
            d_passes = (d_raw >= -clamp) & (d_raw <= clamp)
            if KL_EST == 0:
                kl = -d
                dkl_dd = tl.full(d.shape, -1.0, tl.float32)
            elif KL_EST == 1:
                kl = 0.5 * d * d
                dkl_dd = d
            elif KL_EST == 2:
                kl = tl.exp(d) - 1.0 - d
                dkl_dd = tl.exp(d) - 1.0
            else:  # k3+: k3's value, k2's gradient
                kl = tl.exp(d) - 1.0 - d
                dkl_dd = d
            kl_sum += tl.sum(tl.where(valid, kl, 0.0), axis=0)
            if KL_TERM:
                acc_kl += tl.sum(tl.where(valid, kl * weight, 0.0), axis=0)
                g += kl_coef * tl.where(d_passes, -dkl_dd, 0.0)  # d d / d log pi = -1
        if HAS_ENT:
            ent = _tile(ent_ptr, row, ts, ok)
            ent_sum += tl.sum(tl.where(valid, ent, 0.0), axis=0)
            if ENT_TERM:
                acc_ent += tl.sum(tl.where(valid, ent * weight, 0.0), axis=0)
                tl.store(grad_ent_ptr + row + ts, -ent_coef * weight * scale, mask=ok)
        tl.store(grad_lp_ptr + row + ts, tl.where(valid, g * weight * scale, 0.0), mask=ok)
        n_low += tl.sum((valid & low).to(tl.float32), axis=0)
        n_high += tl.sum((valid & high).to(tl.float32), axis=0)
        ratio_sum += tl.sum(tl.where(valid, ratio, 0.0), axis=0)
        ratio_max = tl.maximum(ratio_max, tl.max(tl.where(valid, ratio, 0.0), axis=0))
    out = stats_ptr + b * NSTAT_
    tl.store(out + 0, acc_pg * scale)
    tl.store(out + 1, acc_kl * scale)
    tl.store(out + 2, acc_ent * scale)
    tl.store(out + 3, length)
    tl.store(out + 4, n_low)
    tl.store(out + 5, n_high)
    tl.store(out + 6, n_dual)
    tl.store(out + 7, n_is)
    tl.store(out + 8, ratio_sum)
    tl.store(out + 9, ratio_max)
    tl.store(out + 10, approx_kl)
    tl.store(out + 11, kl_sum)
    tl.store(out + 12, ent_sum)


def _block_t(T: int, on_cuda: bool) -> int:
    return min(MAX_BLOCK_T if on_cuda else INTERPRETED_BLOCK_T, next_power_of_2(max(T, 1)))


def _launch(cfg: LossConfig, x: LossInputs, entropy_coef: float, mismatch: str, norm_length: int, ent_term: bool):
    """Per-sequence statistics [B, NSTAT] and the per-token gradients (not yet divided by the normaliser)."""
    lp = x.logprobs_B_T.detach().contiguous()
    B, T = lp.shape
    stats = torch.zeros(B, NSTAT, dtype=torch.float32, device=lp.device)
    grad_lp = torch.empty(B, T, dtype=torch.float32, device=lp.device)
    grad_ent = torch.empty(B, T, dtype=torch.float32, device=lp.device) if ent_term else grad_lp
    if B == 0 or T == 0:
        return stats, grad_lp, grad_ent if ent_term else None
    c = lambda t: lp if t is None else t.detach().contiguous()  # noqa: E731  (an absent input: never read)
    has_ref, has_ent = x.ref_logprobs_B_T is not None, x.entropy_B_T is not None
    _loss_kernel[(B,)](
        lp, c(x.old_logprobs_B_T), c(x.sampler_logprobs_B_T), c(x.advantages_B_T),
        x.mask_B_T.to(torch.int8).contiguous(), c(x.weights_B_T), c(x.ref_logprobs_B_T), c(x.entropy_B_T),
        grad_lp, grad_ent, stats,
        T, 1 - cfg.clip_low, 1 + cfg.clip_high, float(cfg.dual_clip or 0.0), float(cfg.kl_coef), float(entropy_coef),
        float(cfg.is_cap), float(cfg.is_low), float(cfg.is_high), float(norm_length), LOG_RATIO_CLAMP,
        POLICY=POLICY_CODES[cfg.policy], DUAL_CLIP=cfg.dual_clip is not None and cfg.policy in ("ppo_clip", "gspo"),
        HAS_REF=has_ref, KL_TERM=has_ref and cfg.kl_coef > 0, KL_EST=KL_CODES[cfg.kl_estimator],
        HAS_ENT=has_ent, ENT_TERM=ent_term, MISMATCH=MISMATCH_CODES[mismatch], HAS_W=x.weights_B_T is not None,
        AGG=AGGREGATION_CODES[cfg.aggregation], NSTAT_=NSTAT, BLOCK_T=_block_t(T, lp.is_cuda),
    )  # fmt: skip
    return stats, grad_lp, grad_ent if ent_term else None


class FusedPolicyLoss(torch.autograd.Function):
    """loss(log pi, H) with the kernel's closed-form gradients; the statistics come out non-differentiable."""

    @staticmethod
    def forward(ctx, logprobs_B_T, entropy_B_T, cfg, x, entropy_coef, mismatch, norm_length, ent_term):
        with no_autocast(logprobs_B_T):
            stats_B, grad_lp, grad_ent = _launch(cfg, x, entropy_coef, mismatch, norm_length, ent_term)
        total = stats_B.sum(0)
        parts = total[[PG, KL_PART, ENT_PART]] / x.normalizer
        loss = parts[0]
        if x.ref_logprobs_B_T is not None and cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * parts[1]
        if ent_term:
            loss = loss - entropy_coef * parts[2]
        ctx.save_for_backward(grad_lp, grad_ent)
        ctx.normalizer, ctx.lp_dtype = x.normalizer, logprobs_B_T.dtype
        ctx.ent_dtype = entropy_B_T.dtype if entropy_B_T is not None else None
        ctx.mark_non_differentiable(stats_B)
        return loss.to(logprobs_B_T.dtype), stats_B

    @staticmethod
    def backward(ctx, dloss, _dstats):
        grad_lp, grad_ent = ctx.saved_tensors
        scale = dloss.float() / ctx.normalizer
        d_lp = (grad_lp * scale).to(ctx.lp_dtype) if ctx.needs_input_grad[0] else None
        d_ent = (grad_ent * scale).to(ctx.ent_dtype) if grad_ent is not None and ctx.needs_input_grad[1] else None
        return d_lp, d_ent, None, None, None, None, None, None


def _stats(cfg: LossConfig, x: LossInputs, mismatch: str, stats_B: torch.Tensor, loss: torch.Tensor,
           ent_term: bool) -> LossStats:
    """The torch table's `LossStats`, key for key, from the kernel's per-sequence sums."""
    total = stats_B.sum(0).tolist()
    out = LossStats(tokens=total[TOKENS])
    out.sums = {"clip_frac/low": total[LOW], "clip_frac/high": total[HIGH]}
    if cfg.policy in ("ppo_clip", "gspo"):
        out.sums["clip_frac/dual"] = total[DUAL]
    if mismatch != "none":
        out.sums["is/truncated_frac" if mismatch in ("tis", "tis_seq") else "is/masked_frac"] = total[IS_FLAG]
    out.sums["approx_kl"] = total[APPROX_KL]
    out.sums["ratio/mean"] = total[RATIO_SUM]
    out.maxima["ratio/max"] = float(stats_B[:, RATIO_MAX].max()) if total[TOKENS] > 0 else 0.0
    if x.ref_logprobs_B_T is not None:
        out.sums["kl"] = total[KL_SUM]
    if x.entropy_B_T is not None:
        out.sums["entropy"] = total[ENT_SUM]
    out.losses = {"loss/pg": total[PG] / x.normalizer}
    if x.ref_logprobs_B_T is not None and cfg.kl_coef > 0:
        out.losses["loss/kl"] = total[KL_PART] / x.normalizer
    if ent_term:
        out.losses["loss/entropy"] = total[ENT_PART] / x.normalizer
    out.losses["loss"] = float(loss)
    return out


def _check_names(cfg: LossConfig, mismatch: str) -> None:
    for what, name, codes in (("loss.policy", cfg.policy, POLICY_CODES), ("loss.kl_estimator", cfg.kl_estimator, KL_CODES),
                              ("loss.mismatch", mismatch, MISMATCH_CODES),
                              ("loss.aggregation", cfg.aggregation, AGGREGATION_CODES)):
        if name not in codes:
            raise ValueError(f"{what} = {name!r} has no Triton kernel yet: use loss.kernel = \"torch\"")


def policy_loss(cfg: LossConfig, x: LossInputs, *, entropy_coef: float = 0.0, mismatch: str = "none",
                norm_length: int = 1) -> tuple[torch.Tensor, LossStats]:
    """`compute_loss`'s loss and statistics; `cfg.kernel` picks the Triton kernel or the torch table."""
    if not use_triton(cfg.kernel, x.logprobs_B_T):
        return compute_loss(cfg, x, entropy_coef=entropy_coef, mismatch=mismatch, norm_length=norm_length)
    _check_names(cfg, mismatch)
    ent_term = x.entropy_B_T is not None and entropy_coef != 0
    loss, stats_B = FusedPolicyLoss.apply(x.logprobs_B_T, x.entropy_B_T if ent_term else None, cfg, x,
                                          float(entropy_coef), mismatch, int(norm_length), ent_term)
    return loss, _stats(cfg, x, mismatch, stats_B.detach(), loss.detach(), ent_term)


# The kernel's codes must name every table entry: a new entry is refused above until the kernel has it.
assert set(POLICY_CODES) <= set(POLICY_LOSSES) and set(KL_CODES) == set(KL_ESTIMATORS)
assert set(MISMATCH_CODES) == set(MISMATCH_CORRECTIONS) | {"none"} and set(AGGREGATION_CODES) == set(AGGREGATIONS)
