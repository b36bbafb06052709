"""The learner's input: scored rollouts and their advantages packed into right-padded tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvr.types import ScoredRollout


@dataclass(frozen=True)
class TrainBatch:
    """B sequences of prompt + completion, right-padded to L tokens.

    tokens_B_L            int64  prompt ids then completion ids, then pad
    completion_mask_B_L   bool   True where tokens[b, t] is a completion token (the loss is on these)
    sampler_logprobs_B_L  fp32   vLLM's log-prob of tokens[b, t] where completion_mask, else 0
    advantages_B          fp32   one advantage per sequence
    """

    tokens_B_L: torch.Tensor
    completion_mask_B_L: torch.Tensor
    sampler_logprobs_B_L: torch.Tensor
    advantages_B: torch.Tensor

    def __len__(self) -> int:
        return self.tokens_B_L.shape[0]

    def select(self, rows: torch.Tensor | slice) -> "TrainBatch":
        """A sub-batch, trimmed to its longest sequence."""
        mask = self.completion_mask_B_L[rows]
        length = int((self.tokens_B_L[rows] != -1).sum(1).max()) if mask.numel() else 0
        return TrainBatch(
            tokens_B_L=self.tokens_B_L[rows][:, :length],
            completion_mask_B_L=mask[:, :length],
            sampler_logprobs_B_L=self.sampler_logprobs_B_L[rows][:, :length],
            advantages_B=self.advantages_B[rows],
        )

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask_B_L.sum())


PAD = -1  # marks padding in tokens_B_L; replaced by a real id before the forward pass


def make_train_batch(scored: list[ScoredRollout], advantages: list[float]) -> TrainBatch:
    """Pack the rollouts that scored successfully (NaN rewards are dropped, not scored 0)."""
    kept = [(s, a) for s, a in zip(scored, advantages) if not math.isnan(s.reward) and s.rollout.num_tokens > 0]
    if not kept:
        raise ValueError("no rollout with a valid reward and at least one completion token in this batch")
    length = max(len(s.rollout.prompt_ids) + s.rollout.num_tokens for s, _ in kept)
    tokens = torch.full((len(kept), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(kept), length), dtype=torch.bool)
    logprobs = torch.zeros((len(kept), length), dtype=torch.float32)
    for b, (s, _) in enumerate(kept):
        r = s.rollout
        p, c = len(r.prompt_ids), r.num_tokens
        tokens[b, : p + c] = torch.tensor(r.prompt_ids + r.completion_ids)
        mask[b, p : p + c] = True
        logprobs[b, p : p + c] = torch.tensor(r.sampler_logprobs)
    return TrainBatch(tokens, mask, logprobs, torch.tensor([a for _, a in kept], dtype=torch.float32))
