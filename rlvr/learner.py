"""Learner: one Ray actor that owns the policy being trained (torch + AdamW).

It computes per-token log-probs and entropies with the fused kernels of `rlvr.kernels` (the LM head is
applied tile by tile, never materialising [tokens, vocab] logits) and the clipped policy loss with
`rlvr.kernels.policy_loss`. It also runs the cold-start SFT stage and hands out its weights for sync.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time

import ray
import torch

from rlvr.batch import PAD, TrainBatch, pack
from rlvr.checkpoint import save_hf_atomic
from rlvr.data import chat_prompt_ids
from rlvr.kernels import PolicyLossConfig, linear_logprobs, logits_logprobs, policy_loss
from rlvr.optim import OptimSpec, TorchUpdater, make_updater
from rlvr.types import Sample

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@ray.remote
class Learner:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        optim: OptimSpec,
        loss: PolicyLossConfig,
        temperature: float = 1.0,
        micro_batch_size: int = 64,
        epochs: int = 1,
        minibatches: int = 1,
        track_ref_kl: bool = True,
        backend: str = "torch",
        zero_stage: int = 2,
        device: str = "cpu",
        threads: int = 0,
        seed: int = 0,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)  # Ray pins actors to 1 thread unless told otherwise
        torch.manual_seed(seed)
        self.device = torch.device(device)
        # fp32 master weights and optimizer state; bf16/fp16 runs compute the forward under autocast.
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
        self.compute_dtype = DTYPES[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.loss_config = loss
        self.temperature = temperature
        self.micro_batch_size = micro_batch_size
        self.epochs, self.minibatches = epochs, minibatches
        self.track_ref_kl = track_ref_kl or loss.kl_coef > 0
        self.optim, self.backend, self.zero_stage = optim, backend, zero_stage
        self.updater = None  # built by set_reference(), when RL starts
        self.reference: torch.nn.Module | None = None
        self.steps = 0
        # Heads with soft-capping or scaling are not a plain linear map: use the logits path for them.
        cfg = self.model.config
        self.fused_head = not (getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logits_scaling", 1.0) != 1.0)

    # ---- log-probs ----
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob and entropy of every completion token, [B, Lc] fp32 (0 at padding).

        Each prompt runs once; every completion of it then runs on the prompt's cached keys and values
        (gradients flow through the cache into the prompt's computation, as in a full forward).
        """
        prompts = batch.prompts_P_Lp.to(self.device)
        completions = batch.completions_B_Lc.to(self.device)
        index = batch.prompt_index_B.to(self.device)
        prompt_mask, mask = prompts != PAD, completions != PAD
        prompt_len = prompt_mask.sum(1)
        inputs = completions[:, :-1].clamp(min=0)  # completion token t predicts token t + 1
        positions = prompt_len[index, None] + torch.arange(inputs.shape[1], device=self.device)
        attention = torch.cat([prompt_mask[index], mask[:, :-1]], 1).long()
        run = model.base_model if self.fused_head else model
        autocast = torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)
        with autocast:
            first = run(input_ids=prompts.clamp(min=0), attention_mask=prompt_mask.long(),
                        position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
            states = first.last_hidden_state if self.fused_head else first.logits  # [P, Lp, H or V]
            states = states[index, -1:]  # left-padded: the last column is each prompt's last token
            if inputs.shape[1]:
                cache = first.past_key_values
                cache.batch_select_indices(index)
                rest = run(input_ids=inputs, attention_mask=attention, position_ids=positions, past_key_values=cache)
                states = torch.cat([states, rest.last_hidden_state if self.fused_head else rest.logits], 1)
            if self.fused_head:
                head = model.get_output_embeddings()
                if getattr(head, "bias", None) is not None:
                    raise NotImplementedError("LM heads with a bias are not supported by the fused path")
                hidden_N = states[mask]
                logprobs_N, entropy_N = linear_logprobs(
                    hidden_N, head.weight.to(hidden_N.dtype), completions[mask], self.temperature
                )
            else:
                logprobs_N, entropy_N = logits_logprobs(states[mask], completions[mask], self.temperature)
        logprobs = torch.zeros(mask.shape, dtype=torch.float32, device=self.device)
        entropy = torch.zeros(mask.shape, dtype=torch.float32, device=self.device)
        logprobs[mask] = logprobs_N
        entropy[mask] = entropy_N.to(torch.float32)
        return logprobs, entropy

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """The current policy's log-probs of the batch's completion tokens, [B, Lc], 0 at padding."""
        return self._logprobs(self.model.eval(), batch)[0].cpu()

    # ---- RL ----
    def set_reference(self) -> None:
        """Freeze a copy of the current policy as pi_ref (for the KL term and the `kl` metric)."""
        if self.track_ref_kl:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        # RL starts with fresh optimizer state, whatever SFT left behind.
        self.updater = make_updater(self.backend, self.model, self.optim, self.zero_stage, self.compute_dtype)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """`epochs` passes of `minibatches` optimizer steps over the batch's groups; returns metrics."""
        start = time.perf_counter()
        if self.updater is None:
            self.set_reference()
        self.model.train()
        stats = _Stats()
        old_all = None
        if self.epochs * self.minibatches > 1:
            # Several optimizer steps per batch: the ratio needs pi_old, the policy before any of them.
            old_all = torch.zeros(batch.completions_B_Lc.shape)
            with torch.no_grad():
                for prompts in self._micro_batches(batch, torch.arange(batch.num_prompts)):
                    sub, rows = batch.select_prompts(prompts), batch.rows_of(prompts)
                    old_all[rows, : sub.completions_B_Lc.shape[1]] = self._logprobs(self.model, sub)[0].cpu()
            stats.add_mismatch(old_all, batch.sampler_logprobs_B_Lc, batch.completion_mask_B_Lc)
        order = torch.randperm(batch.num_prompts)
        for _ in range(self.epochs):
            for minibatch in order.chunk(self.minibatches):
                normalizer = self._normalizer(batch, minibatch)
                for prompts in self._micro_batches(batch, minibatch):
                    sub = batch.select_prompts(prompts)
                    logprobs, entropy = self._logprobs(self.model, sub)
                    mask = sub.completion_mask_B_Lc.to(self.device)
                    if old_all is None:
                        old = logprobs.detach()
                        stats.add_mismatch(old.cpu(), sub.sampler_logprobs_B_Lc, mask.cpu())
                    else:
                        old = old_all[batch.rows_of(prompts), : mask.shape[1]].to(self.device)
                    ref = None
                    if self.reference is not None:
                        with torch.no_grad():
                            ref = self._logprobs(self.reference, sub)[0]
                    loss, metrics = policy_loss(
                        logprobs,
                        old,
                        sub.advantages_B.to(self.device),
                        mask,
                        self.loss_config,
                        ref_logprobs_B_T=ref,
                        entropy_B_T=entropy,
                        normalizer=normalizer,
                    )
                    self.updater.backward(loss)
                    stats.add_loss(loss.item(), metrics, weight=float(mask.sum()))
                stats.grad_norms.append(self.updater.step())
        self.steps += 1
        out = stats.result()
        out["lr"] = self.updater.lr()
        out["timing/learner_s"] = time.perf_counter() - start
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
        """The loss divisor of a minibatch, so that micro-batch losses add up to the minibatch loss."""
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
        """HF-named parameters (tied weights once) on CPU in the engines' dtype, for the object-store sync."""
        return {
            name: p.detach().to("cpu", dtype=self.compute_dtype, copy=True) for name, p in self.model.named_parameters()
        }

    def init_weight_sender(self, workers: list, tp_sizes: list[int]) -> None:
        """Open the NCCL group with the engines (GPU weight sync, rlvr/weight_sync.py)."""
        from rlvr.weight_sync import open_nccl_sender

        self._sender = open_nccl_sender(self.model, workers, tp_sizes)

    def send_weights(self) -> None:
        self._sender.send_weights()

    def save(self, out_dir: str) -> str:
        """Hugging Face format in the run's dtype (the fp32 master weights are cast on the way out)."""
        state = None
        if self.compute_dtype != torch.float32:
            state = {k: v.to(self.compute_dtype) for k, v in self.model.state_dict().items()}
        save_hf_atomic(self.model, self.tokenizer, out_dir, state_dict=state)
        return out_dir

    def ready(self) -> dict:
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": str(self.device),
                "params": sum(p.numel() for p in self.model.parameters())}


class _Stats:
    """Token-weighted means of the loss metrics, and the sampler/learner log-prob mismatch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0.0
        self.loss = 0.0
        self.diff_max = 0.0
        self.diff_sum = 0.0
        self.diff_count = 0
        self.grad_norms: list[float] = []

    def add_mismatch(self, learner: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor) -> None:
        diff = (learner.float() - sampler.float()).abs()[mask]
        if diff.numel():
            self.diff_max = max(self.diff_max, diff.max().item())
            self.diff_sum += diff.sum().item()
            self.diff_count += diff.numel()

    def add_loss(self, loss: float, metrics: dict[str, torch.Tensor], weight: float) -> None:
        self.loss += loss  # micro-batch losses are already normalised to add up
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * weight
        self.weight += weight

    def result(self) -> dict[str, float]:
        out = {key: value / max(self.weight, 1.0) for key, value in self.sums.items()}
        out["loss"] = self.loss / max(1, len(self.grad_norms))
        out["grad_norm"] = sum(self.grad_norms) / max(1, len(self.grad_norms))
        out["logprob_diff/max"] = self.diff_max
        out["logprob_diff/mean"] = self.diff_sum / max(1, self.diff_count)
        return out
