"""The learner's input: groups of scored rollouts packed as shared prompts and their completions.

GRPO samples G completions of each prompt, so the learner runs each prompt once and lets all G
completions attend to its cached keys and values (`Learner._logprobs`): with short answers most
tokens of a batch are prompt tokens, and they are computed G times less often.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from rlvr.types import ScoredRollout

PAD = -1  # marks padding in the id tensors; replaced by a real id before the forward pass


@dataclass(frozen=True)
class TrainBatch:
    """P prompts and B completions of them.

    prompts_P_Lp            int64  prompt ids, left-padded with PAD (so every prompt ends in the last column)
    completions_B_Lc        int64  completion ids, right-padded with PAD
    prompt_index_B          int64  the prompt row each completion continues
    sampler_logprobs_B_Lc   fp32   vLLM's log-prob of each completion token, 0 at padding
    advantages_B_Lc         fp32   per-token advantage (a sequence's advantage on each of its tokens), 0 at padding
    returns_B_Lc            fp32   value targets (PPO's critic), or None
    values_B_Lc             fp32   the critic's values at sampling time, or None
    teacher_logprobs_B_Lc   fp32   a distillation teacher's log-probs of the completion tokens, or None
    ref_logprobs_B_Lc       fp32   the frozen reference policy's log-probs (a KL term, the `kl` metric), or None
    """

    prompts_P_Lp: torch.Tensor
    completions_B_Lc: torch.Tensor
    prompt_index_B: torch.Tensor
    sampler_logprobs_B_Lc: torch.Tensor
    advantages_B_Lc: torch.Tensor
    returns_B_Lc: torch.Tensor | None = None
    values_B_Lc: torch.Tensor | None = None
    teacher_logprobs_B_Lc: torch.Tensor | None = None
    ref_logprobs_B_Lc: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.completions_B_Lc.shape[0]

    @property
    def num_prompts(self) -> int:
        return self.prompts_P_Lp.shape[0]

    @property
    def completion_mask_B_Lc(self) -> torch.Tensor:
        return self.completions_B_Lc != PAD

    @property
    def num_completion_tokens(self) -> int:
        return int(self.completion_mask_B_Lc.sum())

    def rows_of(self, prompts: torch.Tensor) -> torch.Tensor:
        """The completion rows of these prompt rows, in ascending order (the order `select_prompts` keeps)."""
        return torch.isin(self.prompt_index_B, prompts).nonzero().squeeze(1)

    def select_prompts(self, prompts: torch.Tensor) -> "TrainBatch":
        """The sub-batch of these prompt rows and all their completions, trimmed of padding."""
        return self.select_rows(self.rows_of(prompts))

    def select_rows(self, rows: torch.Tensor) -> "TrainBatch":
        """The sub-batch of these completion rows (ascending) and the prompts they continue, trimmed of padding.

        A group may be split across sub-batches (a token budget smaller than the group): each part then
        carries its own copy of the prompt."""
        prompts = torch.unique(self.prompt_index_B[rows])  # sorted, so completion order is kept
        remap = torch.full((self.num_prompts,), -1, dtype=torch.long)
        remap[prompts] = torch.arange(len(prompts))
        sub_prompts = self.prompts_P_Lp[prompts]
        completions = self.completions_B_Lc[rows]
        prompt_len = int((sub_prompts != PAD).sum(1).max())
        completion_len = int((completions != PAD).sum(1).max())
        per_token = {
            f.name: getattr(self, f.name)[rows][:, :completion_len]
            for f in dataclasses.fields(self)
            if f.name.endswith("_B_Lc") and getattr(self, f.name) is not None
        }
        return dataclasses.replace(
            self,
            prompts_P_Lp=sub_prompts[:, sub_prompts.shape[1] - prompt_len :],
            prompt_index_B=remap[self.prompt_index_B[rows]],
            **per_token,
        )


def per_token(batch: TrainBatch, chunks, fn) -> torch.Tensor:
    """[B, Lc] fp32 on CPU: `fn(sub_batch)` ([b, lc]) for each chunk of completion rows (`rlvr/learner/micro_batches.py`),
    written back into the batch's rows (0 where a completion has no token)."""
    out = torch.zeros(batch.completions_B_Lc.shape)
    for rows in chunks:
        sub = batch.select_rows(rows)
        out[rows, : sub.completions_B_Lc.shape[1]] = fn(sub).float().cpu()
    return out


def pack(prompts: list[tuple[int, ...]], completions: list[tuple[int, ...]], prompt_index: list[int],
         sampler_logprobs: list[tuple[float, ...]], advantages: list[float]) -> TrainBatch:
    lp = max(len(p) for p in prompts)
    lc = max(len(c) for c in completions)
    prompts_t = torch.full((len(prompts), lp), PAD, dtype=torch.long)
    completions_t = torch.full((len(completions), lc), PAD, dtype=torch.long)
    logprobs_t = torch.zeros((len(completions), lc), dtype=torch.float32)
    for i, p in enumerate(prompts):
        prompts_t[i, lp - len(p) :] = torch.tensor(p)
    for b, (c, lps) in enumerate(zip(completions, sampler_logprobs)):
        completions_t[b, : len(c)] = torch.tensor(c)
        logprobs_t[b, : len(lps)] = torch.tensor(lps)
    advantages_t = torch.tensor(advantages, dtype=torch.float32)[:, None] * (completions_t != PAD)
    return TrainBatch(prompts_t, completions_t, torch.tensor(prompt_index), logprobs_t, advantages_t)


def make_train_batch(scored_PG: list[list[ScoredRollout]], advantages_PG: list[list[float]]) -> TrainBatch:
    """Pack the rollouts that scored successfully (NaN rewards are dropped, not scored 0)."""
    prompts, completions, index, logprobs, advantages = [], [], [], [], []
    for group, group_advantages in zip(scored_PG, advantages_PG):
        kept = [(s, a) for s, a in zip(group, group_advantages) if not math.isnan(s.reward) and s.rollout.num_tokens]
        if not kept:
            continue
        rows: dict[tuple[int, ...], int] = {}  # a group's rollouts share one prompt; keyed all the same
        for s, a in kept:
            if s.rollout.prompt_ids not in rows:
                rows[s.rollout.prompt_ids] = len(prompts)
                prompts.append(s.rollout.prompt_ids)
            completions.append(s.rollout.completion_ids)
            index.append(rows[s.rollout.prompt_ids])
            logprobs.append(s.rollout.sampler_logprobs)
            advantages.append(a)
    if not completions:
        raise ValueError("no rollout with a valid reward and at least one completion token in this batch")
    return pack(prompts, completions, index, logprobs, advantages)
