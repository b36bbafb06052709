"""The policy objectives, one short torch function each, in an explicit table keyed by `loss.policy`.

    inputs = LossInputs(logprobs_B_T, old_logprobs_B_T, sampler_logprobs_B_T, advantages_B_T, mask_B_T,
                        normalizer=global_tokens_or_sequences)
    loss, stats = compute_loss(cfg.loss, inputs, entropy_coef=0.0)

The learner calls it through `rlvr.kernels.fused_loss.policy_loss`, which runs the same objective as one
fused Triton kernel instead when `loss.kernel` says so; this table is that kernel's reference.

Per token, with log-ratio rho = log pi(y_t) - log pi_old(y_t) (clamped to +-20 so that exp() stays finite
and 0 * inf cannot make a NaN), ratio r = exp(rho), advantage A (per token: sequence advantages are
broadcast), the table `POLICY_LOSSES` holds:

* `ppo_clip`: PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as a loss,
      l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)),
  with DAPO's decoupled bounds (Yu et al. 2025, eq. 10) and the dual clip for A < 0, l <= -c A
  (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL", eq. 5).
* `gspo`: GSPO (Zheng et al. 2025, arXiv 2507.18071, eq. 5-7): the clip decision and value come from the
  length-normalised sequence ratio s_i = exp(mean_t rho_t), through the GSPO-token form
  s_{i,t} = sg[s_i] pi(y_t) / sg[pi(y_t)]; needs a per-sequence aggregation (config refuses token-mean).
* `cispo`: CISPO (MiniMax-M1, arXiv 2506.13585, eq. 4): a REINFORCE loss weighted by the clipped,
  stop-gradient IS weight, l = -sg[clip(r, 1 - clip_low, 1 + clip_high)] A log pi(y_t); no token's
  gradient is dropped.
* `gppo`: GPPO (Klear-Reasoner, Su et al. 2025, arXiv 2508.07629, eq. 6): where PPO's clip removes the
  gradient (A > 0, r > 1 + clip_high; A < 0, r < 1 - clip_low) the value stays clipped but the gradient
  is kept, bounded: r is replaced by r sg[clip(r) / r].

Terms added to every objective:
* KL to the reference (table `KL_ESTIMATORS`), KL(pi || pi_ref) sampled from pi, d = log pi_ref - log pi
  (Schulman 2020, "Approximating KL Divergence"): k1 = -d, k2 = d^2 / 2, k3 = e^d - 1 - d, and `k3+` = k3's value with
  k2's gradient (straight-through). Differentiated as a loss term (the sampling distribution held fixed),
  their gradients in expectation under pi are: k1 -> 0 (E_pi[grad log pi] = 0: k1 in the loss does
  nothing but add noise; it belongs in the reward), k2 -> grad KL(pi || pi_ref) (the reverse KL the
  objective names), k3 -> grad KL(pi_ref || pi) (the forward KL; GRPO's choice, Shao et al. 2024, eq. 4).
* Entropy bonus: -coef H_t (the coefficient comes from `rlvr.algorithms.entropy_control`).
* Train/rollout mismatch correction (table `MISMATCH_CORRECTIONS`; Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
  Off-Policy RL Training"; IcePop, Ling Team 2025): w = pi_old / pi_sampler per token multiplies the
  per-token loss. `tis`: w truncated at `is_cap`; `tis_seq`: the sequence's product of w truncated at
  `is_cap`; `mis`: tokens with w outside [is_low, is_high] are masked (IcePop); `mis_seq`: whole
  sequences whose geometric-mean w leaves that range are masked.
* A per-token weight (`weights_B_T`: decoupled control-token losses, token-selective weights).

Aggregation (table `AGGREGATIONS`; l the per-token loss, L_i the tokens of sequence i, N the global normaliser):
  token-mean               sum_{i,t} l / N,   N = tokens of the whole minibatch, on every rank
  seq-mean-token-mean      sum_i (sum_t l / L_i) / N,   N = sequences of the minibatch          (GRPO eq. 3)
  seq-mean-token-sum-norm  sum_i (sum_t l / norm_length) / N: norm_length is one constant for the run
                           (rollout.max_tokens by default), never the batch's longest completion, which
                           would bring back the length bias Dr. GRPO removes (Liu et al. 2025, Sec. 3.2)
The normaliser is passed in, so micro-batch losses (and ranks) add up to the minibatch loss exactly.

`LossStats` carries sums, not means, for the same reason: `loss/*` are sums over micro-batches of
already-normalised values, token metrics are divided by the token count once at the end, maxima are maxed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlvr.config import LossConfig

LOG_RATIO_CLAMP = 20.0  # e^20 ~ 5e8: beyond it a ratio is meaningless, and e^88 overflows fp32


@dataclass(frozen=True)
class LossInputs:
    """One micro-batch, every tensor [B, T] (T = the micro-batch's longest completion)."""

    logprobs_B_T: torch.Tensor  # the learner's, differentiable
    old_logprobs_B_T: torch.Tensor  # pi_old: the learner's before this batch's first optimizer step
    sampler_logprobs_B_T: torch.Tensor  # vLLM's at sampling time
    advantages_B_T: torch.Tensor
    mask_B_T: torch.Tensor  # bool: completion tokens that count
    normalizer: float  # the minibatch's global token or sequence count (see module docstring)
    weights_B_T: torch.Tensor | None = None  # per-token loss weight; None: 1
    ref_logprobs_B_T: torch.Tensor | None = None
    entropy_B_T: torch.Tensor | None = None  # differentiable when the entropy bonus is on


@dataclass
class LossStats:
    """Additive statistics of a run of micro-batches (and ranks): sums, token count and maxima."""

    sums: dict[str, float] = field(default_factory=dict)  # per-token quantities, summed over tokens
    losses: dict[str, float] = field(default_factory=dict)  # normalised loss parts, summed over micro-batches
    maxima: dict[str, float] = field(default_factory=dict)
    tokens: float = 0.0

    def add(self, other: LossStats) -> None:
        for key, value in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        for key, value in other.losses.items():
            self.losses[key] = self.losses.get(key, 0.0) + value
        for key, value in other.maxima.items():
            self.maxima[key] = max(self.maxima.get(key, value), value)
        self.tokens += other.tokens

    def result(self, optimizer_steps: int = 1) -> dict[str, float]:
        """Token means of the sums; loss parts averaged over the optimizer steps they were summed over."""
        out = {key: value / max(self.tokens, 1.0) for key, value in self.sums.items()}
        out |= {key: value / max(optimizer_steps, 1) for key, value in self.losses.items()}
        return out | self.maxima


def log_ratio(logprobs: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, logprobs - old, 0.0).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _broadcast(seq_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return seq_B[:, None].expand_as(like)


def ppo_clip(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ratio = torch.exp(log_ratio(x.logprobs_B_T, x.old_logprobs_B_T, x.mask_B_T))
    return _clipped_surrogate(ratio, x.advantages_B_T, cfg)


def gspo(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rho = log_ratio(x.logprobs_B_T, x.old_logprobs_B_T, x.mask_B_T)
    seq_B = rho.sum(1) / x.mask_B_T.sum(1).clamp(min=1)
    rho_token = x.logprobs_B_T - x.logprobs_B_T.detach() + _broadcast(seq_B, rho).detach()
    return _clipped_surrogate(torch.exp(rho_token), x.advantages_B_T, cfg)


def _clipped_surrogate(ratio, adv, cfg: LossConfig):
    lo, hi = 1 - cfg.clip_low, 1 + cfg.clip_high
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(lo, hi))
    low, high = (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)
    dual = torch.zeros_like(low)
    if cfg.dual_clip is not None:
        cap = -adv * cfg.dual_clip
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(adv < 0, torch.minimum(loss, cap), loss)
    return loss, {"clip_frac/low": low, "clip_frac/high": high, "clip_frac/dual": dual, "ratio": ratio}


def cispo(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ratio = torch.exp(log_ratio(x.logprobs_B_T, x.old_logprobs_B_T, x.mask_B_T))
    lo, hi = 1 - cfg.clip_low, 1 + cfg.clip_high
    weight = ratio.clamp(lo, hi).detach()
    loss = -weight * x.advantages_B_T * x.logprobs_B_T
    return loss, {"clip_frac/low": ratio < lo, "clip_frac/high": ratio > hi, "ratio": ratio}


def gppo(x: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ratio = torch.exp(log_ratio(x.logprobs_B_T, x.old_logprobs_B_T, x.mask_B_T))
    adv = x.advantages_B_T
    lo, hi = 1 - cfg.clip_low, 1 + cfg.clip_high
    low, high = (adv < 0) & (ratio < lo), (adv > 0) & (ratio > hi)
    bounded = ratio * (ratio.clamp(lo, hi) / ratio).detach()  # value clip(r), gradient clip(r) * grad log pi
    loss = -adv * torch.where(low | high, bounded, ratio)
    return loss, {"clip_frac/low": low, "clip_frac/high": high, "ratio": ratio}


PolicyLoss = Callable[[LossInputs, LossConfig], tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: dict[str, PolicyLoss] = {"ppo_clip": ppo_clip, "gspo": gspo, "cispo": cispo, "gppo": gppo}


def _k1(d: torch.Tensor) -> torch.Tensor:
    return -d


def _k2(d: torch.Tensor) -> torch.Tensor:
    return 0.5 * d * d


def _k3(d: torch.Tensor) -> torch.Tensor:
    return torch.exp(d) - 1 - d


def _k3_plus(d: torch.Tensor) -> torch.Tensor:
    k2 = _k2(d)
    return k2 + (_k3(d) - k2).detach()  # straight-through: k3's value, k2's gradient


# d = log pi_ref - log pi (clamped) -> per-token estimate; keyed by `loss.kl_estimator`.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3, "k3+": _k3_plus}


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (see the module docstring)."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator]((ref_logprobs - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


Flags = dict[str, torch.Tensor]


def _tis(rho: torch.Tensor, lengths_B: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Flags]:
    w = torch.exp(rho)
    return w.clamp(max=cfg.is_cap), {"is/truncated_frac": w > cfg.is_cap}


def _tis_seq(rho: torch.Tensor, lengths_B: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Flags]:
    w = _broadcast(torch.exp(rho.sum(1).clamp(max=LOG_RATIO_CLAMP)), rho)
    return w.clamp(max=cfg.is_cap), {"is/truncated_frac": w > cfg.is_cap}


def _masked_outside(w: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Flags]:
    outside = (w < cfg.is_low) | (w > cfg.is_high)
    return torch.where(outside, 0.0, torch.ones_like(w)), {"is/masked_frac": outside}


def _mis(rho: torch.Tensor, lengths_B: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Flags]:
    return _masked_outside(torch.exp(rho), cfg)


def _mis_seq(rho: torch.Tensor, lengths_B: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, Flags]:
    return _masked_outside(_broadcast(torch.exp(rho.sum(1) / lengths_B.clamp(min=1)), rho), cfg)


# (rho = clamped log pi_old - log pi_sampler [B, T], tokens per sequence [B], cfg) -> (weight, flags);
# keyed by `loss.mismatch`. Not entries: "none" (weight 1, no flags) and "auto" (resolved by the learner's
# builder, `rlvr.learner.build.mismatch_mode`).
MismatchCorrection = Callable[[torch.Tensor, torch.Tensor, LossConfig], tuple[torch.Tensor, Flags]]
MISMATCH_CORRECTIONS: dict[str, MismatchCorrection] = {"tis": _tis, "tis_seq": _tis_seq, "mis": _mis, "mis_seq": _mis_seq}


def mismatch_weights(x: LossInputs, cfg: LossConfig, mode: str) -> tuple[torch.Tensor, Flags]:
    """pi_old / pi_sampler correction per token (1 where none applies) and which tokens it changed."""
    rho = log_ratio(x.old_logprobs_B_T, x.sampler_logprobs_B_T, x.mask_B_T)
    if mode == "none":
        return torch.ones_like(rho), {}
    if mode not in MISMATCH_CORRECTIONS:
        raise ValueError(f"unknown mismatch correction {mode!r}; one of none, {', '.join(MISMATCH_CORRECTIONS)}")
    return MISMATCH_CORRECTIONS[mode](rho, x.mask_B_T.sum(1), cfg)


def _token_sum(per_token_B_T: torch.Tensor, mask_B_T: torch.Tensor, norm_length: int) -> torch.Tensor:
    return per_token_B_T.sum()


def _seq_mean_token_mean(per_token_B_T: torch.Tensor, mask_B_T: torch.Tensor, norm_length: int) -> torch.Tensor:
    return (per_token_B_T.sum(1) / mask_B_T.sum(1).clamp(min=1)).sum()


def _seq_mean_token_sum_norm(per_token_B_T: torch.Tensor, mask_B_T: torch.Tensor, norm_length: int) -> torch.Tensor:
    return (per_token_B_T.sum(1) / norm_length).sum()


# (masked per-token loss [B, T], mask, norm_length) -> the sum the normaliser divides (module docstring);
# keyed by `loss.aggregation`.
Aggregate = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
AGGREGATIONS: dict[str, Aggregate] = {
    "token-mean": _token_sum,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}


def aggregate(loss_B_T: torch.Tensor, mask_B_T: torch.Tensor, aggregation: str, normalizer: float,
              norm_length: int) -> torch.Tensor:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; one of {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[aggregation](torch.where(mask_B_T, loss_B_T, 0.0), mask_B_T, norm_length) / normalizer


def compute_loss(cfg: LossConfig, x: LossInputs, *, entropy_coef: float = 0.0, mismatch: str = "none",
                 norm_length: int = 1) -> tuple[torch.Tensor, LossStats]:
    """The scalar loss of one micro-batch (already divided by the global normaliser) and its statistics."""
    mask = x.mask_B_T
    pg_B_T, flags = POLICY_LOSSES[cfg.policy](x, cfg)
    weight_B_T, is_flags = mismatch_weights(x, cfg, mismatch)
    if x.weights_B_T is not None:
        weight_B_T = weight_B_T * x.weights_B_T
    agg = lambda t: aggregate(t * weight_B_T, mask, cfg.aggregation, x.normalizer, norm_length)  # noqa: E731
    parts = {"loss/pg": agg(pg_B_T)}
    loss = parts["loss/pg"]
    kl_B_T = None
    if x.ref_logprobs_B_T is not None:
        kl_B_T = kl_estimate(x.logprobs_B_T, x.ref_logprobs_B_T, cfg.kl_estimator)
        if cfg.kl_coef > 0:
            parts["loss/kl"] = agg(kl_B_T)
            loss = loss + cfg.kl_coef * parts["loss/kl"]
    if x.entropy_B_T is not None and entropy_coef != 0:
        parts["loss/entropy"] = agg(x.entropy_B_T)
        loss = loss - entropy_coef * parts["loss/entropy"]

    with torch.no_grad():
        stats = LossStats(tokens=float(mask.sum()))
        total = lambda t: float(torch.where(mask, t.float(), 0.0).sum())  # noqa: E731
        ratio = flags.pop("ratio")
        for key, flag in (flags | is_flags).items():
            stats.sums[key] = total(flag)
        rho = log_ratio(x.logprobs_B_T, x.old_logprobs_B_T, mask)
        stats.sums["approx_kl"] = total(torch.exp(rho) - 1 - rho)  # k3 of KL(pi_old || pi)
        stats.sums["ratio/mean"] = total(ratio)
        stats.maxima["ratio/max"] = float(torch.where(mask, ratio, 0.0).max()) if mask.any() else 0.0
        if kl_B_T is not None:
            stats.sums["kl"] = total(kl_B_T)
        if x.entropy_B_T is not None:
            stats.sums["entropy"] = total(x.entropy_B_T)
        stats.losses = {key: float(value) for key, value in parts.items()} | {"loss": float(loss)}
    return loss, stats


def value_loss(values_B_T: torch.Tensor, old_values_B_T: torch.Tensor, returns_B_T: torch.Tensor,
               mask_B_T: torch.Tensor, clip: float | None, normalizer: float) -> tuple[torch.Tensor, LossStats]:
    """PPO's clipped value loss, 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), token-mean.

    Schulman et al. 2017 (PPO2 baselines' value clipping, as in "Implementation Matters in Deep Policy
    Gradients", Engstrom et al. 2020, Sec. 3); `clip` None: the plain squared error.
    """
    err = (values_B_T - returns_B_T) ** 2
    clipped_frac = torch.zeros_like(mask_B_T)
    if clip is not None:
        clipped_values = old_values_B_T + (values_B_T - old_values_B_T).clamp(-clip, clip)
        err_clipped = (clipped_values - returns_B_T) ** 2
        clipped_frac = err_clipped > err
        err = torch.maximum(err, err_clipped)
    loss = 0.5 * torch.where(mask_B_T, err, 0.0).sum() / normalizer
    with torch.no_grad():
        stats = LossStats(tokens=float(mask_B_T.sum()))
        stats.sums["critic/clip_frac"] = float((clipped_frac & mask_B_T).sum())
        stats.sums["critic/values_mean"] = float(torch.where(mask_B_T, values_B_T, 0.0).sum())
        stats.losses["critic/value_loss"] = float(loss)
    return loss, stats
