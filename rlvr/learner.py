"""Learner: one Ray actor that owns the policy being trained (torch + AdamW, or DeepSpeed).

It computes per-token log-probs and entropies with the fused kernels of `rlvr.kernels` (the LM head is
applied tile by tile, never materialising [tokens, vocab] logits; `rlvr/forward.py`) and the policy loss
with the objective table of `rlvr/losses.py`. It also runs the cold-start SFT stage and hands out its
weights for sync. Forwards run without dropout (`forward.without_dropout`): pi_old and pi must be the
same function of the weights for the ratio to mean anything.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time

import ray
import torch

from rlvr.batch import TrainBatch, pack, per_token
from rlvr.config import LoraConfig, LossConfig
from rlvr.data import chat_prompt_ids
from rlvr.entropy_control import EntropyControl
from rlvr.forward import token_logprobs
from rlvr.losses import LossInputs, LossStats, compute_loss, kl_estimate
from rlvr.optim import OptimSpec, TorchUpdater, make_updater
from rlvr.policy_model import export_hf, load_policy, named_weights
from rlvr.types import Sample

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@ray.remote
class Learner:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        optim: OptimSpec,
        loss: LossConfig,
        temperature: float = 1.0,
        micro_batch_size: int = 64,
        epochs: int = 1,
        minibatches: int = 1,
        track_ref_kl: bool = False,
        mismatch: str = "none",
        norm_length: int = 1,
        entropy: EntropyControl | None = None,
        distill_coef: float = 0.0,
        backend: str = "torch",
        zero_stage: int = 2,
        lora: LoraConfig = LoraConfig(),
        device: str = "cpu",
        threads: int = 0,
        seed: int = 0,
    ) -> None:
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)  # Ray pins actors to 1 thread unless told otherwise
        torch.manual_seed(seed)
        self.device = torch.device(device)
        # bf16 runs hold bf16 compute weights; the fp32 masters live in the updater (rlvr/optim.py).
        self.compute_dtype = DTYPES[dtype]
        policy = load_policy(model_path, lora, self.device, self.compute_dtype)
        self.model, self.fused_head = policy.model, policy.fused_head
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # KL in the reward: the driver subtracts it before the advantages (reference_kl), not the loss.
        self.loss_config = dataclasses.replace(loss, kl_coef=0.0) if loss.kl_in == "reward" else loss
        self.temperature = temperature
        self.micro_batch_size = micro_batch_size
        self.epochs, self.minibatches = epochs, minibatches
        self.use_reference = track_ref_kl or loss.kl_coef > 0
        self.mismatch, self.norm_length, self.distill_coef = mismatch, norm_length, distill_coef
        self.entropy = entropy or EntropyControl("constant", loss.entropy_coef)
        self.optim, self.backend, self.zero_stage = optim, backend, zero_stage
        self.updater = None  # built by set_reference(), when RL starts
        self.reference: torch.nn.Module | None = None
        self.steps, self.seed = 0, seed
        if not self.fused_head:
            print("learner: the LM head is not a plain linear map of the last hidden state (scaled, "
                  "soft-capped or biased); log-probs use the full logits instead of the fused head", flush=True)

    # ---- log-probs ----
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs(model, batch, temperature=self.temperature, fused_head=self.fused_head,
                              compute_dtype=self.compute_dtype, device=self.device)

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """The current policy's log-probs of the batch's completion tokens, [B, Lc], 0 at padding."""
        return self._logprobs(self.model, batch)[0].cpu()

    @torch.no_grad()
    def reference_kl(self, batch: TrainBatch) -> torch.Tensor:
        """Per-token KL estimate (loss.kl_estimator) of the current policy to pi_ref, [B, Lc], 0 at padding."""
        if self.reference is None:
            raise RuntimeError("reference_kl needs the reference policy: call set_reference() with a KL term set")
        mask = batch.completion_mask_B_Lc.to(self.device)
        kl = kl_estimate(self._logprobs(self.model, batch)[0], self._logprobs(self.reference, batch)[0],
                         self.loss_config.kl_estimator)
        return torch.where(mask, kl, 0.0).cpu()

    # ---- RL ----
    def set_reference(self) -> None:
        """Freeze a copy of the current policy as pi_ref, only when a KL term or the `kl` metric needs it."""
        if self.use_reference:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        # RL starts with fresh optimizer state, whatever SFT left behind.
        self.updater = make_updater(self.backend, self.model, self.optim, self.zero_stage, self.compute_dtype)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """`epochs` passes of `minibatches` optimizer steps over the batch's prompts; returns metrics.

        Each pass shuffles the prompts anew and splits them into exactly `minibatches` parts; each part's
        loss is normalised by its own total token (or sequence) count, so micro-batches add up to it.
        """
        start = time.perf_counter()
        if self.updater is None:
            self.set_reference()
        self.model.train()
        stats, mismatch, grad_norms = LossStats(), _Mismatch(), []
        distill = [0.0, 0.0]  # sum of log pi_old - log pi_teacher over tokens, tokens
        old_all = None
        if self.epochs * self.minibatches > 1:
            # Several optimizer steps per batch: the ratio needs pi_old, the policy before any of them.
            with torch.no_grad():
                old_all = per_token(batch, self._micro_batches(batch, torch.arange(batch.num_prompts)),
                                    lambda sub: self._logprobs(self.model, sub)[0])
            mismatch.add(old_all, batch.sampler_logprobs_B_Lc, batch.completion_mask_B_Lc)
        shuffle = torch.Generator().manual_seed(self.seed * 1_000_003 + self.steps)
        coef = self.entropy.value(self.steps)
        for _ in range(self.epochs):
            order = torch.randperm(batch.num_prompts, generator=shuffle)  # a new order every epoch
            for minibatch in order.tensor_split(self.minibatches):
                normalizer = self._normalizer(batch, minibatch)
                for prompts in self._micro_batches(batch, minibatch):
                    sub = batch.select_prompts(prompts)
                    logprobs, entropy = self._logprobs(self.model, sub)
                    mask = sub.completion_mask_B_Lc.to(self.device)
                    if old_all is None:
                        old = logprobs.detach()
                        mismatch.add(old.cpu(), sub.sampler_logprobs_B_Lc, mask.cpu())
                    else:
                        old = old_all[batch.rows_of(prompts), : mask.shape[1]].to(self.device)
                    advantages = sub.advantages_B_Lc.to(self.device)
                    if sub.teacher_logprobs_B_Lc is not None:
                        gap = torch.where(mask, old - sub.teacher_logprobs_B_Lc.to(self.device), 0.0)
                        advantages = advantages - self.distill_coef * gap  # minus the per-token reverse KL
                        distill[0], distill[1] = distill[0] + float(gap.sum()), distill[1] + float(mask.sum())
                    ref = None
                    if self.reference is not None:
                        with torch.no_grad():
                            ref = self._logprobs(self.reference, sub)[0]
                    inputs = LossInputs(
                        logprobs, old, sub.sampler_logprobs_B_Lc.to(self.device), advantages, mask, normalizer,
                        ref_logprobs_B_T=ref, entropy_B_T=entropy,
                    )
                    loss, micro = compute_loss(self.loss_config, inputs, entropy_coef=coef, mismatch=self.mismatch,
                                               norm_length=self.norm_length)
                    self.updater.backward(loss)
                    stats.add(micro)
                grad_norms.append(self.updater.step())
        self.steps += 1
        out = stats.result(optimizer_steps=len(grad_norms)) | mismatch.result()
        if distill[1]:
            out["distill/kl"] = distill[0] / distill[1]  # k1 estimate of KL(pi_old || pi_teacher), nats/token
        out["grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        out["entropy/coef"] = coef
        self.entropy.update(out.get("entropy", 0.0))
        out["lr"] = self.updater.lr()
        out["timing/learner_s"] = time.perf_counter() - start
        out |= _memory_metrics(self.device)
        return out

    def _micro_batches(self, batch: TrainBatch, prompts: torch.Tensor) -> list[torch.Tensor]:
        """Split prompt rows into runs whose completions number at most micro_batch_size (one prompt at least)."""
        sizes = torch.bincount(batch.prompt_index_B, minlength=batch.num_prompts)
        chunks, current, count = [], [], 0
        for p in prompts.tolist():
            if current and count + sizes[p] > self.micro_batch_size:
                chunks.append(torch.tensor(current))
                current, count = [], 0
            current.append(p)
            count += int(sizes[p])
        if current:
            chunks.append(torch.tensor(current))
        return chunks

    def _normalizer(self, batch: TrainBatch, prompts: torch.Tensor) -> float:
        """The loss divisor of a minibatch (its tokens, or its sequences), shared by all its micro-batches."""
        rows = batch.rows_of(prompts)
        if self.loss_config.aggregation == "token-mean":
            return float(batch.completion_mask_B_Lc[rows].sum())
        return float(len(rows))

    # ---- cold-start SFT ----
    def start_sft(self, samples: list[Sample], *, batch_size: int, prompt_template: str, system_prompt: str,
                  response_template: str, optim: OptimSpec, seed: int) -> int:
        """Tokenise (prompt, answer) pairs once; `sft_steps` then trains on shuffled batches of them."""
        eos = self.tokenizer.eos_token_id
        self._sft_pairs = [
            (chat_prompt_ids(self.tokenizer, s, prompt_template, system_prompt),
             self.tokenizer.encode(response_template.replace("{answer}", s.answer), add_special_tokens=False) + [eos])
            for s in samples
        ]
        self._sft_batch_size, self._sft_rng = batch_size, random.Random(seed)
        # The cold start is for small models: plain torch whatever learner.backend says.
        self._sft_updater = TorchUpdater(self.model, optim)
        return len(self._sft_pairs)

    def sft_steps(self, n: int) -> dict[str, float]:
        """n supervised steps (cross-entropy on answer tokens); returns the mean loss and token accuracy."""
        self.model.train()
        losses, correct, total = [], 0, 0
        for _ in range(n):
            pairs = self._sft_rng.sample(self._sft_pairs, self._sft_batch_size)
            batch = pack([p for p, _ in pairs], [a for _, a in pairs], list(range(len(pairs))),
                         [()] * len(pairs), [0.0] * len(pairs))
            logprobs, _ = self._logprobs(self.model, batch)
            mask = batch.completion_mask_B_Lc.to(self.device)
            loss = -(logprobs * mask).sum() / mask.sum()
            self._sft_updater.backward(loss)
            self._sft_updater.step()
            losses.append(loss.item())
            correct += int(((logprobs > math.log(0.5)) & mask).sum())
            total += int(mask.sum())
        return {"sft/loss": sum(losses) / len(losses), "sft/token_acc_p50": correct / total,
                "sft/lr": self._sft_updater.lr()}

    # ---- weights ----
    def named_weights(self) -> dict[str, torch.Tensor]:
        """HF-named parameters (tied weights once, LoRA merged) on CPU in the engines' dtype, for the object-store sync."""
        return named_weights(self.model, self.compute_dtype)

    def init_weight_sender(self, workers: list, tp_sizes: list[int]) -> None:
        """Open the NCCL group with the engines (GPU weight sync, rlvr/weight_sync.py)."""
        from rlvr.weight_sync import open_nccl_sender

        self._sender = open_nccl_sender(self.model, workers, tp_sizes)

    def send_weights(self) -> None:
        self._sender.send_weights()

    def save(self, out_dir: str) -> str:
        """A plain Hugging Face folder in the run's dtype, LoRA adapters merged in."""
        export_hf(self.model, self.tokenizer, out_dir, self.compute_dtype)
        return out_dir

    def ready(self) -> dict:
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": str(self.device),
                "params": sum(p.numel() for p in self.model.parameters())}


class _Mismatch:
    """|log pi_old - log pi_sampler| of the sampled tokens: how off-policy the "on-policy" samples are."""

    def __init__(self) -> None:
        self.max, self.sum, self.count = 0.0, 0.0, 0

    def add(self, learner: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor) -> None:
        diff = (learner.float() - sampler.float()).abs()[mask]
        if diff.numel():
            self.max = max(self.max, diff.max().item())
            self.sum += diff.sum().item()
            self.count += diff.numel()

    def result(self) -> dict[str, float]:
        return {"logprob_diff/max": self.max, "logprob_diff/mean": self.sum / max(1, self.count)}


def _memory_metrics(device: torch.device) -> dict[str, float]:
    """The learner process's resident memory and, on GPU, its peak allocation since the last step."""
    import psutil

    out = {"memory/learner_rss_gb": psutil.Process().memory_info().rss / 2**30}
    if device.type == "cuda":
        out["memory/learner_gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out
