"""Teacher: a frozen causal LM that scores the student's sampled tokens, for on-policy distillation
(the same actor, started from the policy's weights, is the reference policy pi_ref of a KL term).

    teacher = Teacher.remote("builtin:tiny-char-teacher" resolved to a folder)
    teacher_logprobs_B_Lc = ray.get(teacher.logprobs.remote(batch))

On-policy distillation (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes" (GKD); KDRL, Xu et al. 2025) trains the student on its own samples toward the
teacher's per-token distribution; only the log-prob of each sampled token is needed for the reverse-KL
policy gradient (`Distillation` in rlvr/algorithms/token_advantages.py). The teacher must share the
student's tokenizer: the token ids are scored as they are.
"""

from __future__ import annotations

import os

import ray
import torch

from rlvr.algorithms.batch import TrainBatch, per_token
from rlvr.learner.forward import token_logprobs
from rlvr.learner.micro_batches import micro_batches
from rlvr.learner.policy_model import fused_head_matches, without_dropout


@ray.remote
class Teacher:
    def __init__(self, model_path: str, *, temperature: float = 1.0, micro_batch_size: int = 64,
                 max_tokens_per_micro_batch: int = 0, dtype: str = "float32", device: str = "cpu",
                 threads: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
        self.model = without_dropout(model).eval().requires_grad_(False)
        self.fused_head = fused_head_matches(self.model, self.device)
        self.temperature, self.micro_batch_size, self.max_tokens = temperature, micro_batch_size, max_tokens_per_micro_batch
        self.compute_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        # A bf16 run's pi_ref holds bf16 weights, as the learner does: pi and pi_ref are then one function
        # of the same weights when RL starts (KL exactly 0), not bf16 against fp32.
        self.model.to(self.compute_dtype)
        self.vocab_size = self.model.config.get_text_config().vocab_size

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """This model's log-prob of each completion token, [B, Lc] fp32, 0 at padding."""
        chunks = micro_batches(batch, torch.arange(batch.num_prompts), max_sequences=self.micro_batch_size,
                               max_tokens=self.max_tokens)
        return per_token(batch, chunks, lambda sub: token_logprobs(
            self.model, sub, temperature=self.temperature, fused_head=self.fused_head,
            compute_dtype=self.compute_dtype, device=self.device)[0])

    def named_weights(self) -> dict[str, torch.Tensor]:
        """This model's HF-named parameters (tied weights once), on CPU: a checkpoint of pi_ref."""
        return {name: p.detach().cpu() for name, p in self.model.named_parameters()}

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> int:
        """Take these HF-named weights (the reference policy: the learner's after SFT); returns how many."""
        missing, unexpected = self.model.load_state_dict(weights, strict=False)  # cast to this model's dtype
        missing = [k for k in missing if k not in _tied(self.model)]
        if missing or unexpected:
            raise ValueError(f"load_weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return len(weights)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "vocab_size": self.vocab_size}


def _tied(model: torch.nn.Module) -> set[str]:
    """State-dict names that alias another parameter (a tied LM head), absent from `named_parameters`."""
    return set(model.state_dict()) - {name for name, _ in model.named_parameters()}
