"""Micro-batches: a minibatch's completion rows cut into forward/backward passes that fit in memory.

    for rows in micro_batches(batch, prompts, max_sequences=64, max_tokens=16_384):
        sub = batch.select_rows(rows)

A pass runs each of its prompts once and every completion on the prompt's cached keys and values
(`rlvr/learner/forward.py`), so its activations grow with `prompts x longest prompt + completions x longest
completion`: that padded count is what `max_tokens` bounds. Whole groups are kept together while they
fit (their prompt then runs once); a group larger than the budget is split into parts, each carrying its
own copy of the prompt, instead of running out of memory.
"""

from __future__ import annotations

import torch

from rlvr.algorithms.batch import PAD, TrainBatch


def micro_batches(batch: TrainBatch, prompts: torch.Tensor, *, max_sequences: int,
                  max_tokens: int = 0) -> list[torch.Tensor]:
    """Completion rows (ascending within each micro-batch) of these prompt rows, in their order, packed
    greedily under `max_sequences` completions and (when > 0) `max_tokens` padded tokens per micro-batch.
    A single completion over the budget still gets a micro-batch of its own."""
    prompt_len = (batch.prompts_P_Lp != PAD).sum(1).tolist()
    completion_len = (batch.completions_B_Lc != PAD).sum(1).tolist()
    budget = max_tokens if max_tokens > 0 else float("inf")
    chunks: list[torch.Tensor] = []
    rows: list[int] = []
    n_prompts, longest_prompt, longest_completion = 0, 0, 0

    def close() -> None:
        nonlocal rows, n_prompts, longest_prompt, longest_completion
        if rows:
            chunks.append(torch.tensor(sorted(rows)))
        rows, n_prompts, longest_prompt, longest_completion = [], 0, 0, 0

    for p in prompts.tolist():
        new_prompt = True
        for r in batch.rows_of(torch.tensor([p])).tolist():
            lp, lc = max(longest_prompt, prompt_len[p]), max(longest_completion, completion_len[r])
            cost = (n_prompts + new_prompt) * lp + (len(rows) + 1) * lc
            if rows and (len(rows) + 1 > max_sequences or cost > budget):
                close()
                new_prompt = True
                lp, lc = prompt_len[p], completion_len[r]
            rows.append(r)
            n_prompts += new_prompt
            new_prompt = False
            longest_prompt, longest_completion = lp, lc
    close()
    return chunks

