"""The policy loss's settings, kept free of torch so that reading a config does not import it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLEstimator = Literal["k1", "k2", "k3"]


@dataclass(frozen=True)
class PolicyLossConfig:
    clip_low: float = 0.2  # ratio floor 1 - clip_low
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high (DAPO clip-higher: 0.28)
    dual_clip: float | None = None  # dual-clip constant c > 1 for negative advantages (Ye et al. 2020)
    ratio_level: Literal["token", "sequence"] = "token"  # "sequence" = GSPO
    aggregation: Aggregation = "token-mean"
    norm_length: int | None = None  # seq-mean-token-sum-norm divisor (Dr. GRPO); None: the batch's T
    kl_coef: float = 0.0  # weight of KL(pi || pi_ref) in the loss; 0 disables the term
    kl_estimator: KLEstimator = "k3"
    entropy_coef: float = 0.0  # weight of the entropy bonus (subtracted from the loss); needs entropy


AGGREGATIONS: tuple[Aggregation, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS: tuple[KLEstimator, ...] = ("k1", "k2", "k3")
