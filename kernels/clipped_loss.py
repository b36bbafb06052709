"""Clipped policy-gradient loss for the PPO / GRPO / DAPO / GSPO family, with its metrics.

    loss, metrics = policy_loss(logprobs_B_T, old_logprobs_B_T, advantages_B, mask_B_T, config,
                                ref_logprobs_B_T=None, entropy_B_T=None, normalizer=None)

Per token, with log-ratio rho = log pi(y_t) - log pi_old(y_t), ratio r = exp(rho), advantage A:
  * PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss:
        l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    with separate low and high bounds: DAPO's clip-higher (Yu et al. 2025, eq. 10; e.g. 0.2 / 0.28).
  * Dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL"):
    for A < 0 the loss is also capped at -c A, so a huge ratio on a bad token cannot blow up.
  * ratio_level="sequence": GSPO (Zheng et al. 2025, arXiv 2507.18071). The sequence ratio is the
    length-normalised s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(mean_t rho_t), used through
    the paper's GSPO-token form s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)]: every token of a sequence
    shares the value and the clip decision of s_i, and dl/d log pi(y_t) = dl/ds * s_i. With
    seq-mean-token-mean and per-sequence advantages this is exactly GSPO's gradient; per-token
    advantages also work.
  * KL to a reference policy, KL(pi || pi_ref) sampled from pi, with Schulman's estimators
    ("Approximating KL Divergence", 2020), d = log pi_ref - log pi:
        k1 = -d,   k2 = d^2 / 2,   k3 = exp(d) - 1 - d   (k3: GRPO, Shao et al. 2024, eq. 4)
    added to the loss as kl_coef * k when kl_coef > 0; reported as `kl` whenever ref log-probs are given.
  * Entropy bonus: -entropy_coef * H_t when entropy_coef > 0 (entropy is a differentiable input).
Aggregation over the masked tokens, with L_i the number of tokens of sequence i:
  * token-mean:               sum_{i,t} l / sum_i L_i                       (DAPO's token-level loss)
  * seq-mean-token-mean:      sum_i (sum_t l / L_i) / #sequences             (GRPO eq. 3)
  * seq-mean-token-sum-norm:  sum_i (sum_t l / norm_length) / #sequences     (Dr. GRPO, Liu et al. 2025:
    no 1/L_i length bias; norm_length defaults to the batch's T, a constant only if T is fixed)
`normalizer` replaces the denominator (tokens, or sequences) so that micro-batch losses add up to the
full-batch loss under gradient accumulation. #sequences counts sequences with at least one token.
Deviations: verl's seq-mean-token-sum-norm divides the token sum by T only, not by #sequences too;
ours is a mean over sequences, as its name says (the same up to a constant factor, i.e. the
learning rate). Masked positions are zeroed before exp(), so padding cannot turn into inf * 0;
`clip_frac/*` count tokens whose gradient a clip removed (A > 0 above the high bound, A < 0 below
the low bound or past the dual cap).

Four parts: `policy_loss_reference` (autograd torch, the definition), the Triton kernel, `PolicyLoss`
(autograd; the forward also produces d loss / d logprobs in closed form, so backward is one multiply),
and `policy_loss`. On CPU the same closed form runs in torch (`_terms_torch`), mirroring the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl

from rlvr.kernels.dispatch import Backend, next_power_of_2, no_autocast, use_triton
from rlvr.kernels.loss_config import AGGREGATIONS, KL_ESTIMATORS, Aggregation, KLEstimator, PolicyLossConfig  # noqa: F401

# Columns of the per-sequence statistics both implementations produce ([B, _NSTAT] fp32).
_LOSS, _TOKENS, _LOW, _HIGH, _DUAL, _RATIO_SUM, _RATIO_MAX, _APPROX_KL, _KL, _ENT, _LOSS_PG, _LOSS_KL, _LOSS_ENT = range(13)
_NSTAT = 16


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020)."""
    d = ref_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    return torch.exp(d) - 1 - d


def _check(config: PolicyLossConfig, ref, entropy):
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"loss.aggregation must be one of {AGGREGATIONS}, got {config.aggregation!r}")
    if config.kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"loss.kl_estimator must be one of {KL_ESTIMATORS}, got {config.kl_estimator!r}")
    if config.ratio_level not in ("token", "sequence"):
        raise ValueError(f"loss.ratio_level must be 'token' or 'sequence', got {config.ratio_level!r}")
    if config.dual_clip is not None and config.dual_clip <= 1:
        raise ValueError(f"loss.dual_clip must be > 1, got {config.dual_clip}")
    if config.kl_coef > 0 and ref is None:
        raise ValueError("loss.kl_coef > 0 needs ref_logprobs")
    if config.entropy_coef > 0 and entropy is None:
        raise ValueError("loss.entropy_coef > 0 needs entropy")


def _row_scale(config: PolicyLossConfig, lengths_B: torch.Tensor, T: int) -> torch.Tensor:
    if config.aggregation == "token-mean":
        return torch.ones_like(lengths_B)
    if config.aggregation == "seq-mean-token-mean":
        return 1.0 / lengths_B.clamp(min=1)
    return torch.full_like(lengths_B, 1.0 / (config.norm_length or T))


def _default_normalizer(config: PolicyLossConfig, lengths_B: torch.Tensor) -> torch.Tensor:
    if config.aggregation == "token-mean":
        return lengths_B.sum().clamp(min=1)
    return (lengths_B > 0).sum().float().clamp(min=1)


def policy_loss_reference(
    logprobs_B_T: torch.Tensor,
    old_logprobs_B_T: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_B_T: torch.Tensor,
    config: PolicyLossConfig,
    ref_logprobs_B_T: torch.Tensor | None = None,
    entropy_B_T: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The definition, in fp32 autograd torch: the loss and the same metrics as `policy_loss`."""
    _check(config, ref_logprobs_B_T, entropy_B_T)
    lp, m = logprobs_B_T.float(), mask_B_T.float()
    valid = m > 0
    adv = advantages_B.float()
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(lp)
    lengths_B = m.sum(-1)
    log_ratio = torch.where(valid, lp - old_logprobs_B_T.float(), 0.0)
    token_log_ratio = log_ratio
    if config.ratio_level == "sequence":  # GSPO-token: value s_i, gradient through each token's own log-prob
        seq_log_ratio_B = (log_ratio * m).sum(-1) / lengths_B.clamp(min=1)
        log_ratio = lp - lp.detach() + seq_log_ratio_B.detach()[:, None]
    ratio = torch.exp(log_ratio)
    lo, hi = 1 - config.clip_low, 1 + config.clip_high
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(lo, hi))
    clip_low, clip_high = (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)
    dual = torch.zeros_like(valid)
    if config.dual_clip is not None:
        dual = (adv < 0) & (pg > -adv * config.dual_clip)
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * config.dual_clip), pg)
    w = m * _row_scale(config, lengths_B, lp.shape[-1])[:, None]
    norm = _default_normalizer(config, lengths_B) if normalizer is None else normalizer
    terms = {"loss/pg": (pg * w).sum() / norm}
    loss = terms["loss/pg"]
    kl = None
    if ref_logprobs_B_T is not None:
        kl = torch.where(valid, kl_estimate(lp, ref_logprobs_B_T.float(), config.kl_estimator), 0.0)
        if config.kl_coef > 0:
            terms["loss/kl"] = (kl * w).sum() / norm
            loss = loss + config.kl_coef * terms["loss/kl"]
    if entropy_B_T is not None and config.entropy_coef > 0:
        terms["loss/entropy"] = (torch.where(valid, entropy_B_T.float(), 0.0) * w).sum() / norm
        loss = loss - config.entropy_coef * terms["loss/entropy"]

    count = lengths_B.sum().clamp(min=1)
    with torch.no_grad():
        mean = lambda x: (x.float() * m).sum() / count  # noqa: E731
        metrics = {
            "clip_frac/low": mean(clip_low),
            "clip_frac/high": mean(clip_high),
            "clip_frac/dual": mean(dual),
            "approx_kl": mean(torch.exp(token_log_ratio) - 1 - token_log_ratio),  # k3 of KL(pi_old || pi)
            "ratio/mean": mean(ratio),
            "ratio/max": torch.where(valid, ratio, 0.0).max() if lp.numel() else lp.new_zeros(()),
        }
        if kl is not None:
            metrics["kl"] = mean(kl)
        if entropy_B_T is not None:
            metrics["entropy"] = mean(torch.where(valid, entropy_B_T.float(), 0.0))
        metrics |= {k: v.detach() for k, v in terms.items()}
    return loss, metrics


# ----------------------------------------------------------------------------- torch closed form


def _terms_torch(lp, old, adv, m, ref, ent, config: PolicyLossConfig):
    """Per-sequence statistics [B, _NSTAT], d(sum of weighted loss)/d logprobs and d/d entropy.

    The same closed form as the Triton kernel, in vectorised fp32 torch; weights include the
    aggregation's per-sequence scale but not the normalizer.
    """
    B, T = lp.shape
    valid = m > 0
    lengths = m.sum(1)
    token_lr = torch.where(valid, lp - old, 0.0)
    lr = token_lr
    if config.ratio_level == "sequence":
        lr = ((token_lr * m).sum(1) / lengths.clamp(min=1))[:, None].expand(B, T)
    ratio = torch.exp(lr)
    lo, hi = 1 - config.clip_low, 1 + config.clip_high
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(lo, hi))
    low, high = (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)
    dpg = torch.where(low | high, 0.0, -adv)  # d pg / d ratio
    dual = torch.zeros_like(valid)
    if config.dual_clip is not None:
        cap = -adv * config.dual_clip
        dual = (adv < 0) & (pg > cap)
        pg, dpg = torch.where(dual, cap, pg), torch.where(dual, 0.0, dpg)
    w = m * _row_scale(config, lengths, T)[:, None]
    grad_lp = dpg * ratio  # d ratio / d logprob = ratio, for the token and GSPO-token ratio alike
    stats = lp.new_zeros(B, _NSTAT)
    stats[:, _LOSS_PG] = (pg * w).sum(1)
    loss = pg
    if ref is not None:
        d = torch.where(valid, ref - lp, 0.0)
        kl = kl_estimate(torch.zeros_like(d), d, config.kl_estimator)  # estimators only depend on d
        stats[:, _KL] = (kl * m).sum(1)
        if config.kl_coef > 0:
            dkl = {"k1": torch.ones_like(d), "k2": -d, "k3": 1 - torch.exp(d)}[config.kl_estimator]
            stats[:, _LOSS_KL] = (kl * w).sum(1)
            loss = loss + config.kl_coef * kl
            grad_lp = grad_lp + config.kl_coef * dkl
    grad_ent = None
    if ent is not None:
        ent = torch.where(valid, ent, 0.0)
        stats[:, _ENT] = (ent * m).sum(1)
        if config.entropy_coef > 0:
            stats[:, _LOSS_ENT] = (ent * w).sum(1)
            loss = loss - config.entropy_coef * ent
            grad_ent = -config.entropy_coef * w
    stats[:, _LOSS] = (loss * w).sum(1)
    stats[:, _TOKENS] = lengths
    stats[:, _LOW], stats[:, _HIGH], stats[:, _DUAL] = (low * m).sum(1), (high * m).sum(1), (dual * m).sum(1)
    stats[:, _RATIO_SUM] = (ratio * m).sum(1)
    stats[:, _RATIO_MAX] = torch.where(valid, ratio, 0.0).amax(1) if T else 0.0
    stats[:, _APPROX_KL] = ((torch.exp(token_lr) - 1 - token_lr) * m).sum(1)
    return stats, grad_lp * w, grad_ent


# ----------------------------------------------------------------------------- Triton kernel


@triton.jit
def _policy_loss_kernel(
    lp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, ent_ptr, grad_lp_ptr, grad_ent_ptr, stats_ptr,
    T, stride_adv_b, stride_adv_t, clip_lo, clip_hi, dual_c, kl_coef, ent_coef, norm_length,
    SEQ_RATIO: tl.constexpr, DUAL: tl.constexpr, HAS_REF: tl.constexpr, KL_TERM: tl.constexpr,
    KL_EST: tl.constexpr, HAS_ENT: tl.constexpr, ENT_TERM: tl.constexpr, AGG: tl.constexpr,
    NSTAT: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """One program per sequence: a first pass for its length (and GSPO's mean log-ratio), a second
    for the loss, its closed-form gradient and the sequence's statistics (columns as in _terms_torch)."""
    b = tl.program_id(0)
    row = b.to(tl.int64) * T
    length = 0.0
    seq_lr = 0.0
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        m = tl.load(mask_ptr + row + ts, mask=ts < T, other=0.0)
        length += tl.sum(m, axis=0)
        if SEQ_RATIO:
            lp = tl.load(lp_ptr + row + ts, mask=ts < T, other=0.0).to(tl.float32)
            old = tl.load(old_ptr + row + ts, mask=ts < T, other=0.0).to(tl.float32)
            seq_lr += tl.sum(tl.where(m > 0, lp - old, 0.0) * m, axis=0)
    seq_lr = seq_lr / tl.maximum(length, 1.0)
    if AGG == 0:  # token-mean
        scale = 1.0
    elif AGG == 1:  # seq-mean-token-mean
        scale = 1.0 / tl.maximum(length, 1.0)
    else:  # seq-mean-token-sum-norm
        scale = 1.0 / norm_length

    acc_loss = 0.0
    acc_pg = 0.0
    acc_kl_w = 0.0
    acc_ent_w = 0.0
    n_low = 0.0
    n_high = 0.0
    n_dual = 0.0
    ratio_sum = 0.0
    ratio_max = 0.0
    approx_kl = 0.0
    kl_sum = 0.0
    ent_sum = 0.0
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        ok = ts < T
        m = tl.load(mask_ptr + row + ts, mask=ok, other=0.0)
        valid = m > 0
        lp = tl.load(lp_ptr + row + ts, mask=ok, other=0.0).to(tl.float32)
        old = tl.load(old_ptr + row + ts, mask=ok, other=0.0).to(tl.float32)
        adv = tl.load(adv_ptr + b * stride_adv_b + ts * stride_adv_t, mask=ok, other=0.0).to(tl.float32)
        token_lr = tl.where(valid, lp - old, 0.0)
        if SEQ_RATIO:
            ratio = tl.exp(tl.zeros_like(lp) + seq_lr)
        else:
            ratio = tl.exp(token_lr)
        pg = tl.maximum(-adv * ratio, -adv * tl.minimum(tl.maximum(ratio, clip_lo), clip_hi))
        low = (adv < 0) & (ratio < clip_lo)
        high = (adv > 0) & (ratio > clip_hi)
        dpg = tl.where(low | high, 0.0, -adv)
        if DUAL:
            cap = -adv * dual_c
            dual = (adv < 0) & (pg > cap)
            pg = tl.where(dual, cap, pg)
            dpg = tl.where(dual, 0.0, dpg)
            n_dual += tl.sum(tl.where(dual, m, 0.0), axis=0)
        w = m * scale
        loss = pg
        grad = dpg * ratio
        if HAS_REF:
            ref = tl.load(ref_ptr + row + ts, mask=ok, other=0.0).to(tl.float32)
            d = tl.where(valid, ref - lp, 0.0)
            if KL_EST == 0:
                kl = -d
                dkl = tl.full(d.shape, 1.0, tl.float32)
            elif KL_EST == 1:
                kl = 0.5 * d * d
                dkl = -d
            else:
                kl = tl.exp(d) - 1.0 - d
                dkl = 1.0 - tl.exp(d)
            kl_sum += tl.sum(kl * m, axis=0)
            if KL_TERM:
                acc_kl_w += tl.sum(kl * w, axis=0)
                loss += kl_coef * kl
                grad += kl_coef * dkl
        if HAS_ENT:
            ent = tl.where(valid, tl.load(ent_ptr + row + ts, mask=ok, other=0.0).to(tl.float32), 0.0)
            ent_sum += tl.sum(ent * m, axis=0)
            if ENT_TERM:
                acc_ent_w += tl.sum(ent * w, axis=0)
                loss -= ent_coef * ent
                tl.store(grad_ent_ptr + row + ts, -ent_coef * w, mask=ok)
        tl.store(grad_lp_ptr + row + ts, grad * w, mask=ok)
        acc_loss += tl.sum(loss * w, axis=0)
        acc_pg += tl.sum(pg * w, axis=0)
        n_low += tl.sum(tl.where(low, m, 0.0), axis=0)
        n_high += tl.sum(tl.where(high, m, 0.0), axis=0)
        ratio_sum += tl.sum(ratio * m, axis=0)
        ratio_max = tl.maximum(ratio_max, tl.max(tl.where(valid, ratio, 0.0), axis=0))
        approx_kl += tl.sum((tl.exp(token_lr) - 1.0 - token_lr) * m, axis=0)
    out = stats_ptr + b * NSTAT
    tl.store(out + 0, acc_loss)
    tl.store(out + 1, length)
    tl.store(out + 2, n_low)
    tl.store(out + 3, n_high)
    tl.store(out + 4, n_dual)
    tl.store(out + 5, ratio_sum)
    tl.store(out + 6, ratio_max)
    tl.store(out + 7, approx_kl)
    tl.store(out + 8, kl_sum)
    tl.store(out + 9, ent_sum)
    tl.store(out + 10, acc_pg)
    tl.store(out + 11, acc_kl_w)
    tl.store(out + 12, acc_ent_w)


def _terms_triton(lp, old, adv, m, ref, ent, config: PolicyLossConfig):
    B, T = lp.shape
    stats = torch.zeros(B, _NSTAT, dtype=torch.float32, device=lp.device)
    grad_lp = torch.empty(B, T, dtype=torch.float32, device=lp.device)
    ent_term = ent is not None and config.entropy_coef > 0
    grad_ent = torch.empty(B, T, dtype=torch.float32, device=lp.device) if ent_term else None
    adv_strides = (adv.stride(0), 0) if adv.dim() == 1 else adv.stride()
    block_t = 16 if not lp.is_cuda else min(1024, max(16, next_power_of_2(T)))
    _policy_loss_kernel[(B,)](
        lp, old, adv, m, ref if ref is not None else lp, ent if ent is not None else lp,
        grad_lp, grad_ent if grad_ent is not None else grad_lp, stats,
        T, adv_strides[0], adv_strides[1], 1 - config.clip_low, 1 + config.clip_high,
        float(config.dual_clip or 0.0), float(config.kl_coef), float(config.entropy_coef),
        float(config.norm_length or T),
        SEQ_RATIO=config.ratio_level == "sequence", DUAL=config.dual_clip is not None,
        HAS_REF=ref is not None, KL_TERM=config.kl_coef > 0, KL_EST=KL_ESTIMATORS.index(config.kl_estimator),
        HAS_ENT=ent is not None, ENT_TERM=ent_term, AGG=AGGREGATIONS.index(config.aggregation),
        NSTAT=_NSTAT, BLOCK_T=block_t,
    )  # fmt: skip
    return stats, grad_lp, grad_ent


# ----------------------------------------------------------------------------- autograd + public


class PolicyLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logprobs_B_T, entropy_B_T, old_B_T, adv, mask_B_T, ref_B_T, normalizer, config, triton_path):
        terms = _terms_triton if triton_path else _terms_torch
        with no_autocast(logprobs_B_T):
            stats_B, grad_lp, grad_ent = terms(logprobs_B_T, old_B_T, adv, mask_B_T, ref_B_T, entropy_B_T, config)
        ctx.save_for_backward(grad_lp, grad_ent, normalizer)
        ctx.lp_dtype = logprobs_B_T.dtype
        ctx.mark_non_differentiable(stats_B)
        return stats_B[:, _LOSS].sum() / normalizer, stats_B

    @staticmethod
    def backward(ctx, dloss, _dstats):
        grad_lp, grad_ent, normalizer = ctx.saved_tensors
        scale = dloss / normalizer
        d_lp = (grad_lp * scale).to(ctx.lp_dtype) if ctx.needs_input_grad[0] else None
        d_ent = grad_ent * scale if grad_ent is not None and ctx.needs_input_grad[1] else None
        return d_lp, d_ent, None, None, None, None, None, None, None


def policy_loss(
    logprobs_B_T: torch.Tensor,
    old_logprobs_B_T: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_B_T: torch.Tensor,
    config: PolicyLossConfig,
    ref_logprobs_B_T: torch.Tensor | None = None,
    entropy_B_T: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss (differentiable w.r.t. logprobs and entropy) and detached scalar metrics.

    advantages are [B] (per sequence) or [B, T]; mask is bool or 0/1 float [B, T]. Metrics:
    clip_frac/{low,high,dual}, approx_kl (k3 of KL(pi_old || pi)), ratio/{mean,max}, loss/pg, and
    kl (ref given), entropy (entropy given), loss/kl and loss/entropy (when in the loss); all are
    means over this call's masked tokens (the loss terms use the loss's normalizer).
    """
    _check(config, ref_logprobs_B_T, entropy_B_T)
    if logprobs_B_T.dim() != 2 or mask_B_T.shape != logprobs_B_T.shape:
        raise ValueError(f"logprobs and mask must be [B, T], got {logprobs_B_T.shape} and {mask_B_T.shape}")
    if advantages_B.shape not in (logprobs_B_T.shape[:1], logprobs_B_T.shape):
        raise ValueError(f"advantages must be [B] or [B, T], got {advantages_B.shape} for {logprobs_B_T.shape}")
    if config.entropy_coef <= 0 and entropy_B_T is not None:
        entropy_B_T = entropy_B_T.detach()  # metric only
    triton_path = use_triton(backend, logprobs_B_T, old_logprobs_B_T, advantages_B, mask_B_T) and logprobs_B_T.numel() > 0
    mask = mask_B_T.to(torch.float32).contiguous()
    if normalizer is None:
        normalizer = _default_normalizer(config, mask.sum(1))
    norm = torch.as_tensor(normalizer, dtype=torch.float32, device=mask.device).detach()
    lp, old, adv, ref, ent = logprobs_B_T, old_logprobs_B_T.detach(), advantages_B.detach(), ref_logprobs_B_T, entropy_B_T
    if triton_path:  # the kernel reads any float dtype and takes [B] advantages with a zero stride
        lp, old, adv = lp.contiguous(), old.contiguous(), adv.contiguous()
        ref = None if ref is None else ref.detach().contiguous()
        ent = None if ent is None else ent.contiguous()
    else:  # the torch closed form wants fp32 and broadcast advantages
        lp, old, adv = lp.float(), old.float(), adv.float()
        adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(lp)
        ref = None if ref is None else ref.detach().float()
        ent = None if ent is None else ent.float()
    loss, stats_B = PolicyLoss.apply(lp, ent, old, adv, mask, ref, norm, config, triton_path)
    return loss, _metrics(stats_B, norm, config, ref is not None, ent is not None)


def _metrics(stats_B: torch.Tensor, norm: torch.Tensor, config, has_ref: bool, has_ent: bool) -> dict:
    total = stats_B.sum(0)
    count = total[_TOKENS].clamp(min=1)
    metrics = {
        "clip_frac/low": total[_LOW] / count,
        "clip_frac/high": total[_HIGH] / count,
        "clip_frac/dual": total[_DUAL] / count,
        "approx_kl": total[_APPROX_KL] / count,
        "ratio/mean": total[_RATIO_SUM] / count,
        "ratio/max": stats_B[:, _RATIO_MAX].max() if stats_B.shape[0] else total[_RATIO_MAX],
        "loss/pg": total[_LOSS_PG] / norm,
    }
    if has_ref:
        metrics["kl"] = total[_KL] / count
        if config.kl_coef > 0:
            metrics["loss/kl"] = total[_LOSS_KL] / norm
    if has_ent:
        metrics["entropy"] = total[_ENT] / count
        if config.entropy_coef > 0:
            metrics["loss/entropy"] = total[_LOSS_ENT] / norm
    return metrics
