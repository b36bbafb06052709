"""Advantage estimators: pure, vectorised functions of the rewards of a step, in one table.

    advantages_P_G = group_advantages(rewards_P_G, "grpo", norm="auto")
    advantages_B_T, returns_B_T = gae(rewards_B_T, values_B_T, mask_B_T, gamma=1.0, lam=1.0)

Input `rewards_P_G`: P prompts x G completions; NaN marks a rollout whose reward failed. Such entries get
advantage 0 and are left out of every statistic (and masked out of the loss by the caller).

Each outcome estimator is a baseline and a scale, and `ESTIMATORS` names the pairs of the papers:

  name                    baseline b_i                 scale (advantage_norm "auto")
  grpo                    group mean                   group std      Shao et al. 2024 (DeepSeekMath) Sec. 4.1.2
  dr_grpo                 group mean                   none           Liu et al. 2025 (Dr. GRPO) Sec. 3.2
  rloo                    mean of the other G-1        none           Ahmadian et al. 2024, eq. 6
  reinforce_pp            none                         token mean/std Hu 2025 (REINFORCE++) eq. 8
  reinforce_pp_baseline   group mean                   token mean/std Hu et al. 2025 (REINFORCE++-baseline)

`algo.advantage_norm` overrides the scale: "group" divides by the group's std, "batch" whitens over the
step's valid rollouts ((a - mean) / std, each rollout counted once), "batch-token" whitens over the
step's completion tokens (each rollout counted once per token, as REINFORCE++ and verl's
`masked_whiten` do), "none" leaves r - b. std is the unbiased sample std; a group whose rewards are all
equal gets zero advantages under group scaling.

REINFORCE++ with a KL in the reward (`loss.kl_in = "reward"`): the paper gives token t the reward
1[t = last] r - beta KL_t and the advantage its return-to-go (gamma = 1), so token t carries
r - b - beta sum_{i >= t} KL_i before the token whitening (`token_advantages`). That is the
"batch-token" path; with a per-rollout scale ("batch", "group", "none") the completion's whole KL sum
comes off its reward instead, the same for every token (rlvr/algorithms/estimate.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

EPS = 1e-6
Norm = Literal["auto", "group", "batch", "batch-token", "none"]
TOKEN_NORMS = ("batch-token",)  # scales that need the completions' tokens: `token_advantages`


def _valid(rewards_P_G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = ~torch.isnan(rewards_P_G)
    return torch.where(valid, rewards_P_G, 0.0), valid


def group_mean(rewards_P_G: torch.Tensor) -> torch.Tensor:
    filled, valid = _valid(rewards_P_G)
    return filled.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)


def leave_one_out(rewards_P_G: torch.Tensor) -> torch.Tensor:
    """Mean of the group's other valid rewards (the rollout's own reward where it is alone)."""
    filled, valid = _valid(rewards_P_G)
    count = valid.sum(1, keepdim=True)
    others = (filled.sum(1, keepdim=True) - filled) / (count - 1).clamp(min=1)
    return torch.where(count > 1, others, filled)


def no_baseline(rewards_P_G: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(rewards_P_G)


def _std(x: torch.Tensor, valid: torch.Tensor, dim: int | None) -> torch.Tensor:
    kw = {"dim": dim, "keepdim": True} if dim is not None else {}
    count = valid.sum(**kw)
    mean = torch.where(valid, x, 0.0).sum(**kw) / count.clamp(min=1)
    return (torch.where(valid, x - mean, 0.0) ** 2).sum(**kw).div((count - 1).clamp(min=1)).sqrt()


def scale(advantages: torch.Tensor, valid: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "group":
        return advantages / (_std(advantages, valid, 1) + EPS)
    if norm == "batch":
        mean = torch.where(valid, advantages, 0.0).sum() / valid.sum().clamp(min=1)
        return (advantages - mean) / (_std(advantages, valid, None) + EPS)
    if norm == "none":
        return advantages
    raise ValueError(f"unknown advantage normalisation {norm!r}")


Baseline = Callable[[torch.Tensor], torch.Tensor]
ESTIMATORS: dict[str, tuple[Baseline, str]] = {
    "grpo": (group_mean, "group"),
    "dr_grpo": (group_mean, "none"),
    "rloo": (leave_one_out, "none"),
    "reinforce_pp": (no_baseline, "batch-token"),
    "reinforce_pp_baseline": (group_mean, "batch-token"),
}


def resolve_norm(estimator: str, norm: Norm) -> str:
    """The scale `norm` names for `estimator` ("auto": the estimator's paper's)."""
    return ESTIMATORS[estimator][1] if norm == "auto" else norm


def group_advantages(rewards_P_G: torch.Tensor, estimator: str, norm: Norm = "auto") -> torch.Tensor:
    """One advantage per rollout, [P, G] (0 where the reward is NaN). A token scale ("batch-token") needs
    the completions' tokens, which [P, G] rewards do not hold: this returns r - b unscaled, and
    `token_advantages` scales it over the batch's tokens."""
    baseline, _ = ESTIMATORS[estimator]
    norm = resolve_norm(estimator, norm)
    filled, valid = _valid(rewards_P_G)
    centred = torch.where(valid, filled - baseline(rewards_P_G), 0.0)
    advantages = centred if norm in TOKEN_NORMS else scale(centred, valid, norm)
    return torch.where(valid, advantages, 0.0)


def token_advantages(centred_B_T: torch.Tensor, mask_B_T: torch.Tensor,
                     kl_B_T: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE++'s per-token advantages (Hu 2025, eq. 7-8), [B, T]: each token's r - b (`centred_B_T`,
    the rollout's value on each of its tokens) minus the KL penalty's return-to-go sum_{i >= t} kl_i
    (`kl_B_T`, already times its coefficient; gamma = 1), whitened over the batch's valid tokens; 0 at padding."""
    returns = centred_B_T.float()
    if kl_B_T is not None:
        kl = torch.where(mask_B_T, kl_B_T.float(), 0.0)
        returns = returns - kl.flip(1).cumsum(1).flip(1)
    return torch.where(mask_B_T, scale(torch.where(mask_B_T, returns, 0.0), mask_B_T, "batch"), 0.0)


def gae(rewards_B_T: torch.Tensor, values_B_T: torch.Tensor, mask_B_T: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each completion's tokens (Schulman et al. 2016, eq. 16).

    delta_t = r_t + gamma V(s_{t+1}) - V(s_t), A_t = sum_l (gamma lam)^l delta_{t+l}, returns R_t = A_t + V(s_t);
    the state after the last completion token is terminal (V = 0). Padding (mask False) sits after the
    last token only. Outcome rewards put r at the last token and 0 elsewhere.
    """
    B, T = rewards_B_T.shape
    m = mask_B_T.float()
    values = values_B_T * m
    advantages = torch.zeros_like(values)
    running = torch.zeros(B, dtype=values.dtype, device=values.device)
    next_value = torch.zeros_like(running)
    for t in reversed(range(T)):
        delta = rewards_B_T[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, advantages + values


def outcome_token_rewards(rewards_B: torch.Tensor, mask_B_T: torch.Tensor) -> torch.Tensor:
    """Each completion's reward on its last token, [B, T]."""
    last = mask_B_T.long().sum(1).clamp(min=1) - 1
    out = torch.zeros(mask_B_T.shape, dtype=torch.float32)
    out[torch.arange(len(last)), last] = rewards_B.float()
    return out * mask_B_T
