"""Group-relative advantage estimators: pure, vectorised functions of the rewards of a step.

Input `rewards_P_G`: P prompts x G completions; NaN marks a rollout whose reward failed. Such entries get
advantage 0 and are left out of their group's statistics (and masked out of the loss by the caller).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

EPS = 1e-6


def _group_mean(rewards_P_G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    valid = ~torch.isnan(rewards_P_G)
    count_P = valid.sum(1, keepdim=True)
    filled = torch.where(valid, rewards_P_G, 0.0)
    mean_P = filled.sum(1, keepdim=True) / count_P.clamp(min=1)
    return filled, valid, mean_P


def grpo(rewards_P_G: torch.Tensor) -> torch.Tensor:
    """GRPO outcome advantage, (r_i - mean(r)) / std(r) within each group.

    Shao et al. 2024, "DeepSeekMath", Sec. 4.1.2 (outcome supervision). std is the unbiased sample std;
    a group whose rewards are all equal gets zero advantages.
    """
    filled, valid, mean_P = _group_mean(rewards_P_G)
    count_P = valid.sum(1, keepdim=True)
    var_P = (torch.where(valid, filled - mean_P, 0.0) ** 2).sum(1, keepdim=True) / (count_P - 1).clamp(min=1)
    advantages = (filled - mean_P) / (var_P.sqrt() + EPS)
    return torch.where(valid, advantages, 0.0)


def dr_grpo(rewards_P_G: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: r_i - mean(r), without the std division that over-weights near-uniform groups.

    Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", Sec. 3.2. Pair with
    loss.aggregation = "seq-mean-token-sum-norm" to also remove the length bias.
    """
    filled, valid, mean_P = _group_mean(rewards_P_G)
    return torch.where(valid, filled - mean_P, 0.0)


def rloo(rewards_P_G: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: r_i minus the mean of the other completions of the group.

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization", eq. 6;
    equal to n/(n-1) * (r_i - mean(r)) for n valid completions.
    """
    filled, valid, mean_P = _group_mean(rewards_P_G)
    count_P = valid.sum(1, keepdim=True)
    scale_P = count_P / (count_P - 1).clamp(min=1)
    return torch.where(valid & (count_P > 1), scale_P * (filled - mean_P), 0.0)


Advantage = Literal["grpo", "dr_grpo", "rloo"]
ADVANTAGES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo}
