"""Critic: the value model of PPO, its own Ray actor (a causal LM's trunk with a scalar head).

    critic = Critic.remote(model_path, optim=OptimSpec(lr=1e-4), value_clip=0.2)
    values_B_Lc = ray.get(critic.values.remote(batch))       # V(s_t) before each completion token
    metrics = ray.get(critic.train_step.remote(batch))       # batch.returns_B_Lc / values_B_Lc set (GAE)

The trunk starts from the policy's weights (after SFT) or any Hugging Face folder; the head is a fresh
zero-initialised linear map, so the first values are 0 and the first advantages are the returns. V(s_t)
is read from the hidden state that predicts completion token t (`forward.completion_states`), the same
positions the policy's log-probs come from. Trained with PPO's clipped value loss (`losses.value_loss`)
through the learner's engine protocol (`rlvr/learner/engine.py`: torch, or DeepSpeed ZeRO), so its
optimizer, schedule and resumable state are the policy's code; one rank today.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray
import torch

from rlvr.algorithms.batch import TrainBatch, per_token
from rlvr.algorithms.losses import LossStats, value_loss
from rlvr.learner.engine import LearnerEngine, make_engine
from rlvr.learner.forward import completion_states
from rlvr.learner.micro_batches import micro_batches
from rlvr.learner.optim import OptimSpec
from rlvr.learner.policy_model import without_dropout


class ValueModel(torch.nn.Module):
    def __init__(self, trunk: torch.nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, batch: TrainBatch, device: torch.device) -> torch.Tensor:
        states = completion_states(self.trunk, batch, device, hidden=True)
        return self.head(states.float()).squeeze(-1) * batch.completion_mask_B_Lc.to(device)


@ray.remote
class Critic:
    def __init__(self, model_path: str, *, optim: OptimSpec, value_clip: float | None = 0.2, epochs: int = 1,
                 micro_batch_size: int = 64, backend: str = "torch", zero_stage: int = 2, device: str = "cpu",
                 threads: int = 0, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.device = torch.device(device)
        lm = without_dropout(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32))
        model = ValueModel(lm.base_model, lm.config.get_text_config().hidden_size).to(self.device)
        self.prefix = lm.base_model_prefix + "."
        del lm  # the LM head is not needed
        self.engine: LearnerEngine = make_engine(backend, model, optim, zero_stage, torch.float32)
        self.model = self.engine.module
        self.value_clip, self.epochs, self.micro_batch_size = value_clip, epochs, micro_batch_size

    def load_policy_weights(self, weights: dict[str, torch.Tensor]) -> int:
        """Start the trunk from the policy's HF-named weights (`Learner.named_weights`); returns how many loaded."""
        trunk = {k.removeprefix(self.prefix): v.float() for k, v in weights.items() if k.startswith(self.prefix)}
        missing, _ = self.model.trunk.load_state_dict(trunk, strict=False)
        if missing:
            raise ValueError(f"critic: the policy's weights lack {missing[:3]}")
        return len(trunk)

    @torch.no_grad()
    def values(self, batch: TrainBatch) -> torch.Tensor:
        """[B, Lc] fp32, 0 at padding."""
        chunks = micro_batches(batch, torch.arange(batch.num_prompts), max_sequences=self.micro_batch_size)
        return per_token(batch, chunks, lambda sub: self.model(sub, self.device))

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """`epochs` full-batch steps on the clipped value loss toward `batch.returns_B_Lc`."""
        if batch.returns_B_Lc is None or batch.values_B_Lc is None:
            raise ValueError("critic.train_step needs returns_B_Lc and values_B_Lc (set by the GAE stage)")
        self.model.train()
        stats, normalizer, grad_norms = LossStats(), float(batch.num_completion_tokens), []
        groups = max(1, self.micro_batch_size // max(1, len(batch) // max(1, batch.num_prompts)))
        for _ in range(self.epochs):
            parts = torch.arange(batch.num_prompts).split(groups)
            for i, rows in enumerate(parts):
                sub = batch.select_prompts(rows)
                mask = sub.completion_mask_B_Lc.to(self.device)
                loss, micro = value_loss(self.model(sub, self.device), sub.values_B_Lc.to(self.device),
                                         sub.returns_B_Lc.to(self.device), mask, self.value_clip, normalizer)
                self.engine.backward(loss * self.engine.loss_scale, boundary=i == len(parts) - 1)
                stats.add(micro)
            grad_norms.append(self.engine.step())
        out = stats.result(optimizer_steps=len(grad_norms))
        out["critic/explained_variance"] = explained_variance(batch.values_B_Lc, batch.returns_B_Lc,
                                                              batch.completion_mask_B_Lc)
        out["critic/grad_norm"] = sum(grad_norms) / len(grad_norms)
        return out

    def ready(self) -> dict:
        return {"pid": os.getpid(), "params": sum(p.numel() for p in self.model.parameters())}

    # ---- resumable state (rlvr/runtime/resume.py) ----
    def save_state(self, out_dir: str) -> str:
        """The value model (trunk and head) and the torch RNG in critic.pt; its optimizer and scheduler in
        the engine's own files beside it (`LearnerEngine.save_state`)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "rng": torch.get_rng_state()}, out / "critic.pt")
        self.engine.save_state(out, rank=0)
        return out_dir

    def load_state(self, in_dir: str) -> None:
        state = torch.load(Path(in_dir) / "critic.pt", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.engine.load_state(Path(in_dir), rank=0)
        torch.set_rng_state(state["rng"])


def explained_variance(values_B_T: torch.Tensor, returns_B_T: torch.Tensor, mask_B_T: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 a perfect critic, 0 a constant one, < 0 worse.

    Returns that do not vary (every reward of the step equal) explain nothing: 0, not NaN, so the metric
    stays finite."""
    v, r = values_B_T[mask_B_T].double(), returns_B_T[mask_B_T].double()
    var = r.var(unbiased=False)
    return float(1 - (r - v).var(unbiased=False) / var) if var > 0 else 0.0
