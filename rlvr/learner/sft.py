"""Cold-start SFT: supervised steps on (prompt, answer) pairs before RL, inside the learner process.

    sft = ColdStart(model, tokenizer, logprobs, samples, batch_size=64, prompt_template="{prompt} =",
                    system_prompt="", response_template="{answer}", optim=OptimSpec(lr=2e-3), seed=0)
    metrics = sft.steps(50)        # {"sft/loss", "sft/token_acc_p50", "sft/lr"}

A tiny random model has no reward signal without it. The loss is the mean cross-entropy of the answer
tokens (the response template with the answer filled in, then EOS); the prompt is the chat prompt RL
samples from (`chat_prompt_ids`). The learner actor runs it (`Learner.start_sft` / `sft_steps`, on rank 0
of the group through `LearnerGroup.start_sft` / `sft_steps`); RL then copies rank 0's weights to every rank.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch

from rlvr.algorithms.batch import TrainBatch, pack
from rlvr.data.sources import chat_prompt_ids
from rlvr.learner.optim import OptimSpec, TorchUpdater
from rlvr.types import Sample

LogProbs = Callable[[TrainBatch], torch.Tensor]  # the policy's [B, Lc] log-probs of the completion tokens


class ColdStart:
    def __init__(self, model: torch.nn.Module, tokenizer, logprobs: LogProbs, samples: list[Sample], *,
                 batch_size: int, prompt_template: str, system_prompt: str, response_template: str,
                 optim: OptimSpec, seed: int) -> None:
        """Tokenise the pairs once; `steps` then trains on shuffled batches of them."""
        eos = tokenizer.eos_token_id
        self.pairs = [
            (chat_prompt_ids(tokenizer, s, prompt_template, system_prompt),
             tokenizer.encode(response_template.replace("{answer}", s.answer), add_special_tokens=False) + [eos])
            for s in samples
        ]
        self.model, self.logprobs = model, logprobs
        self.batch_size, self.rng = batch_size, random.Random(seed)
        # The cold start is for small models, on one rank: plain torch whatever learner.backend says.
        self.updater = TorchUpdater(model, optim)

    def __len__(self) -> int:
        return len(self.pairs)

    def steps(self, n: int) -> dict[str, float]:
        """n supervised steps (cross-entropy on answer tokens); returns the mean loss and token accuracy."""
        self.model.train()
        losses, correct, total = [], 0, 0
        for _ in range(n):
            pairs = self.rng.sample(self.pairs, self.batch_size)
            batch = pack([p for p, _ in pairs], [a for _, a in pairs], list(range(len(pairs))),
                         [()] * len(pairs), [0.0] * len(pairs))
            logprobs = self.logprobs(batch)
            mask = batch.completion_mask_B_Lc.to(logprobs.device)
            loss = -(logprobs * mask).sum() / mask.sum()
            self.updater.backward(loss)
            self.updater.step()
            losses.append(loss.item())
            correct += int(((logprobs > math.log(0.5)) & mask).sum())
            total += int(mask.sum())
        return {"sft/loss": sum(losses) / len(losses), "sft/token_acc_p50": correct / total,
                "sft/lr": self.updater.lr()}

    def state_dict(self) -> dict:
        """What continues these steps exactly, beside the model's weights: the optimizer, its schedule and the
        batch order's generator."""
        return {"updater": self.updater.state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.updater.load_state_dict(state["updater"])
        self.rng.setstate(state["rng"])
