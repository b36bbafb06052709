"""Per-token advantage terms: what the learner adds to each token's advantage once pi_old is known.

    terms = (Distillation(coef=1.0),)                               # rlvr/learner/build.py builds them
    addend_B_T, sums = term(batch, old_logprobs_B_T, mask_B_T)      # per micro-batch, in the learner
    advantages_B_T = batch.advantages_B_Lc + addend_B_T             # what the loss table receives
    metrics = term.metrics(sums over micro-batches and ranks)

The advantage stage (rlvr/algorithms/estimate.py) runs before the learner and cannot know pi_old, the
policy before this batch's first optimizer step: a term that needs it is computed by the learner, per
micro-batch, and enters the loss table (rlvr/algorithms/losses.py) as part of the advantage, like any
other advantage. Each term is a frozen dataclass (it pickles into the learner actor). `sums` are
additive (summed over micro-batches and ranks) so `metrics` gives the group's value.

`Distillation`: on-policy distillation (Agarwal et al. 2024, GKD; KDRL, Xu et al. 2025) as a token
reward: A_t += coef (log pi_T(y_t) - log pi_old(y_t)), the negative per-token reverse KL to the teacher
(estimated on the student's own samples), whose policy gradient per token is that of KL(pi || pi_T).
The teacher's log-probs come with the batch (`WithTeacher`). Example: pi_old(y_t) = 0.5, pi_T(y_t) = 0.25,
coef 1: A_t gains log 0.25 - log 0.5 = -0.69.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from rlvr.algorithms.batch import TrainBatch


class TokenAdvantage(Protocol):
    def __call__(self, batch: TrainBatch, old_logprobs_B_T: torch.Tensor,
                 mask_B_T: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The [B, T] addend to the advantages of a micro-batch (0 off the mask) and its additive sums."""
        ...

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The logged metrics from the sums of every micro-batch of every rank."""
        ...


@dataclass(frozen=True)
class Distillation:
    coef: float

    def __call__(self, batch: TrainBatch, old_logprobs_B_T: torch.Tensor,
                 mask_B_T: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.teacher_logprobs_B_Lc is None:
            raise ValueError("distillation needs the teacher's log-probs in the batch (WithTeacher)")
        teacher = batch.teacher_logprobs_B_Lc[:, : mask_B_T.shape[1]].to(old_logprobs_B_T.device)
        gap = torch.where(mask_B_T, old_logprobs_B_T - teacher, 0.0)  # log pi_old - log pi_T per token
        return -self.coef * gap, {"distill/gap": float(gap.sum()), "distill/tokens": float(mask_B_T.sum())}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("distill/tokens"):
            return {}
        # k1 estimate of KL(pi_old || pi_teacher), nats/token
        return {"distill/kl": sums["distill/gap"] / sums["distill/tokens"]}
