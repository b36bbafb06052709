"""Teacher: a frozen causal LM that scores the student's sampled tokens, for on-policy distillation.

    teacher = Teacher.remote("builtin:tiny-char-teacher" resolved to a folder)
    teacher_logprobs_B_Lc = ray.get(teacher.logprobs.remote(batch))

On-policy distillation (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes" (GKD); KDRL, Xu et al. 2025) trains the student on its own samples toward the
teacher's per-token distribution; only the log-prob of each sampled token is needed for the reverse-KL
policy gradient (the learner's `distill_coef`). The teacher must share the student's tokenizer: the
token ids are scored as they are.
"""

from __future__ import annotations

import os

import ray
import torch

from rlvr.batch import TrainBatch
from rlvr.forward import fused_head_matches, token_logprobs, without_dropout


@ray.remote
class Teacher:
    def __init__(self, model_path: str, *, temperature: float = 1.0, micro_batch_size: int = 64,
                 device: str = "cpu", threads: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
        self.model = without_dropout(model).eval().requires_grad_(False)
        self.fused_head = fused_head_matches(self.model, self.device)
        self.temperature, self.micro_batch_size = temperature, micro_batch_size
        self.vocab_size = self.model.config.get_text_config().vocab_size

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """The teacher's log-prob of each completion token, [B, Lc] fp32, 0 at padding."""
        out = torch.zeros(batch.completions_B_Lc.shape)
        for rows in torch.arange(batch.num_prompts).split(max(1, self.micro_batch_size)):
            sub, index = batch.select_prompts(rows), batch.rows_of(rows)
            lp, _ = token_logprobs(self.model, sub, temperature=self.temperature, fused_head=self.fused_head,
                                   compute_dtype=torch.float32, device=self.device)
            out[index, : sub.completions_B_Lc.shape[1]] = lp.cpu()
        return out

    def ready(self) -> dict:
        return {"pid": os.getpid(), "vocab_size": self.vocab_size}
