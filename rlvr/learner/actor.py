"""Learner: one Ray actor that owns the policy being trained (torch + AdamW, or DeepSpeed).

It computes per-token log-probs and entropies with the fused kernels of `rlvr.kernels` (the LM head is
applied tile by tile, never materialising [tokens, vocab] logits; `rlvr/learner/forward.py`) and the policy loss
with the objective table of `rlvr/algorithms/losses.py` or its fused Triton kernel (`loss.kernel`,
`kernels/fused_loss.py`). It also runs the cold-start SFT stage and hands out its weights for sync
(through `rlvr/sync/handout.py`, from one seam, `_weights`). Forwards run without dropout
(`policy_model.without_dropout`): pi_old and pi must be the
same function of the weights for the ratio to mean anything.

Several learners form a data-parallel group (`rlvr/learner/group.py`): each rank trains on its share of
a step's prompts, every loss normaliser and metric is summed over the ranks, and the engine
(`rlvr/learner/engine.py`: torch, or DeepSpeed ZeRO 0-3) sums the gradients, so N ranks make the update
one rank would make on the whole batch. The frozen reference policy is not here: its log-probs arrive in
the batch (`ref_logprobs_B_Lc`, from the reference actor of `rlvr/algorithms/estimate.py`). Terms that
need pi_old (distillation) are per-token advantage terms (`rlvr/algorithms/token_advantages.py`) added to
the advantage the loss table receives. The resumable state is the engine's to write (optimizer, scheduler),
beside the weights, RNG and counters written here; no code here asks which engine it runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import ray
import torch

from rlvr.algorithms.batch import TrainBatch, per_token
from rlvr.algorithms.entropy_control import EntropyControl
from rlvr.algorithms.losses import LossInputs, LossStats
from rlvr.algorithms.token_advantages import TokenAdvantage
from rlvr.config import LoraConfig, LossConfig
from rlvr.kernels.fused_loss import policy_loss
from rlvr.learner.engine import LearnerEngine, all_reduce, join_group, make_engine, world_size
from rlvr.learner.forward import checkpoint_layers, token_logprobs
from rlvr.learner.group import shard_prompts
from rlvr.learner.memory import PeakMemory
from rlvr.learner.micro_batches import micro_batches
from rlvr.learner.optim import OptimSpec
from rlvr.learner.policy_model import export_hf, is_lora, load_adapter, load_policy, named_weights, save_adapter
from rlvr.learner.sft import ColdStart
from rlvr.runtime.checkpoint import save_hf_atomic
from rlvr.runtime.remote import free_port
from rlvr.sync.handout import WeightHandout
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
        max_tokens_per_micro_batch: int = 0,
        activation_checkpointing: bool = False,
        epochs: int = 1,
        minibatches: int = 1,
        mismatch: str = "none",
        norm_length: int = 1,
        entropy: EntropyControl | None = None,
        token_advantages: tuple[TokenAdvantage, ...] = (),
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
        # bf16 runs hold bf16 compute weights; the fp32 masters live in the updater (rlvr/learner/optim.py).
        self.compute_dtype = DTYPES[dtype]
        policy = load_policy(model_path, lora, self.device, self.compute_dtype)
        self.model, self.fused_head = policy.model, policy.fused_head
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # KL in the reward: the driver subtracts it before the advantages (estimate.KLPenalty), not the loss.
        self.loss_config = dataclasses.replace(loss, kl_coef=0.0) if loss.kl_in == "reward" else loss
        self.temperature = temperature
        self.micro_batch_size, self.max_tokens = micro_batch_size, max_tokens_per_micro_batch
        self.checkpointed = activation_checkpointing and checkpoint_layers(self.model) > 0
        self.epochs, self.minibatches = epochs, minibatches
        self.mismatch, self.norm_length, self.token_advantages = mismatch, norm_length, token_advantages
        self.entropy = entropy or EntropyControl("constant", loss.entropy_coef)
        self.optim, self.backend, self.zero_stage = optim, backend, zero_stage
        self.updater: LearnerEngine | None = None  # the learner engine, built by set_reference() when RL starts
        self.steps, self.seed, self.rank = 0, seed, 0
        self.peak = PeakMemory(self.device)
        self.sft: ColdStart | None = None  # the cold-start SFT, set up by start_sft()
        self._gathered: dict[str, torch.Tensor] | None = None  # rank 0's ZeRO-3 gather for one sync or save
        self.handout = WeightHandout(self._weights, self.compute_dtype)  # the weights, to every sync transport
        if not self.fused_head:
            print("learner: the LM head is not a plain linear map of the last hidden state (scaled, soft-capped, "
                  "biased or LoRA-adapted); log-probs use the full logits instead of the fused head", flush=True)

    # ---- the group ----
    def group_address(self) -> tuple[str, int]:
        """Where the group's rendezvous listens: this rank's node and a free port (called on rank 0)."""
        return ray.util.get_node_ip_address(), free_port()

    def join_group(self, rank: int, world: int, address: str, port: int, timeout_s: float) -> None:
        """Join the learner group's process group (gloo on CPU; on GPU NCCL for CUDA tensors and gloo for the
        CPU ones the group also reduces: metric sums, pi_old's shares, micro-batch counts); every rank calls it at once."""
        join_group(rank, world, address, port, "cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "gloo", timeout_s)
        self.rank = rank

    # ---- log-probs ----
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fused_head and (self.updater is None or self.updater.fused_head)
        return token_logprobs(model, batch, temperature=self.temperature, fused_head=fused,
                              compute_dtype=self.compute_dtype, device=self.device, checkpointed=self.checkpointed)

    def _chunks(self, batch: TrainBatch, prompts: torch.Tensor) -> list[torch.Tensor]:
        return micro_batches(batch, prompts, max_sequences=self.micro_batch_size, max_tokens=self.max_tokens)

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """The current policy's log-probs of the completion tokens of `prompts` (default: all), [B, Lc],
        0 at padding and at other ranks' rows."""
        prompts = torch.arange(batch.num_prompts) if prompts is None else prompts
        chunks = self._even(self._chunks(batch, prompts), batch)
        real = [rows for rows in chunks if rows is not _EMPTY]
        for _ in range(len(chunks) - len(real)):
            self._logprobs(self.model, batch.select_rows(_DUMMY))
        return per_token(batch, real, lambda sub: self._logprobs(self.model, sub)[0])

    def _even(self, chunks: list[torch.Tensor], batch: TrainBatch) -> list[torch.Tensor]:
        """Pad this rank's micro-batches to the group's largest count with empty ones (`_EMPTY`): under
        ZeRO-3 every forward and backward is a collective every rank must join."""
        most = int(all_reduce({"n": float(len(chunks))}, op="max")["n"])
        return chunks + [_EMPTY] * (most - len(chunks))

    # ---- RL ----
    def set_reference(self) -> None:
        """RL starts: every rank takes rank 0's weights (after SFT) and a fresh optimizer state, whatever
        SFT left behind. (The name is kept from when pi_ref lived here: it is now its own actor.)"""
        if world_size() > 1:
            for p in self.model.parameters():
                torch.distributed.broadcast(p.data, src=0)
        self._start_engine()

    def _start_engine(self) -> None:
        self.updater = make_engine(self.backend, self.model, self.optim, self.zero_stage, self.compute_dtype)
        self.model = self.updater.module

    def train_step(self, batch: TrainBatch, prompts: torch.Tensor | None = None) -> dict[str, float]:
        """`epochs` passes of `minibatches` optimizer steps over the batch's prompts; returns the group's
        metrics (every rank returns the same sums). `prompts`: this rank's share for the pi_old pass
        (default: all).

        Each pass shuffles the whole batch's prompts anew, with a generator every rank seeds alike, and
        splits them into exactly `minibatches` parts; each rank trains on its share of each part (balanced
        by tokens, `shard_prompts`), so minibatch j is the one a single rank would take. Each part's loss
        is normalised by the group's total token (or sequence) count of that part, so micro-batches and
        ranks add up to it.
        """
        start = time.perf_counter()
        self.peak.reset()
        if self.updater is None:
            self.set_reference()
        self.model.train()
        prompts = torch.arange(batch.num_prompts) if prompts is None else prompts
        stats, mismatch, grad_norms = LossStats(), _Mismatch(), []
        term_sums = [{} for _ in self.token_advantages]  # each term's additive sums, over micro-batches
        old_all = None
        if self.epochs * self.minibatches > 1:
            # Several optimizer steps per batch: the ratio needs pi_old, the policy before any of them.
            old_all = self.logprobs(batch, prompts)
            rows = batch.rows_of(prompts)
            mismatch.add(old_all[rows], batch.sampler_logprobs_B_Lc[rows], batch.completion_mask_B_Lc[rows])
            if world_size() > 1:  # each rank scored its share (0 elsewhere); the minibatches mix the shares
                torch.distributed.all_reduce(old_all)
        shuffle = torch.Generator().manual_seed(self.seed * 1_000_003 + self.steps)  # alike on every rank
        coef = self.entropy.value(self.steps)
        everyone = torch.arange(batch.num_prompts)
        for _ in range(self.epochs):
            order = everyone[torch.randperm(len(everyone), generator=shuffle)]  # a new order every epoch
            for part in order.tensor_split(self.minibatches):
                minibatch = shard_prompts(batch, world_size(), part)[self.rank]
                normalizer = self._normalizer(batch, minibatch)
                chunks = self._even(self._chunks(batch, minibatch), batch)
                for i, rows in enumerate(chunks):
                    empty = rows is _EMPTY
                    sub = batch.select_rows(_DUMMY if empty else rows)
                    logprobs, entropy = self._logprobs(self.model, sub)
                    mask = sub.completion_mask_B_Lc.to(self.device)
                    if old_all is None or empty:
                        old = logprobs.detach()
                        if not empty:
                            mismatch.add(old.cpu(), sub.sampler_logprobs_B_Lc, mask.cpu())
                    else:
                        old = old_all[rows, : mask.shape[1]].to(self.device)
                    advantages = sub.advantages_B_Lc.to(self.device)
                    for term, sums in zip(self.token_advantages, term_sums):  # terms that need pi_old
                        addend, micro_sums = term(sub, old, mask)
                        advantages = advantages + addend
                        if not empty:
                            for key, value in micro_sums.items():
                                sums[key] = sums.get(key, 0.0) + value
                    ref = sub.ref_logprobs_B_Lc.to(self.device) if sub.ref_logprobs_B_Lc is not None else None
                    inputs = LossInputs(
                        logprobs, old, sub.sampler_logprobs_B_Lc.to(self.device), advantages, mask, normalizer,
                        ref_logprobs_B_T=ref, entropy_B_T=entropy,
                    )
                    loss, micro = policy_loss(self.loss_config, inputs, entropy_coef=coef, mismatch=self.mismatch,
                                              norm_length=self.norm_length)  # loss.kernel: table or kernel
                    # An empty micro-batch joins the collectives with a zero gradient and adds nothing.
                    self.updater.backward(loss * (0.0 if empty else self.updater.loss_scale), boundary=i == len(chunks) - 1)
                    if not empty:
                        stats.add(micro)
                grad_norms.append(self.updater.step())
        self.steps += 1
        out = _reduce_stats(stats).result(optimizer_steps=len(grad_norms)) | mismatch.result()
        for term, sums in zip(self.token_advantages, term_sums):
            out |= term.metrics(all_reduce(sums))
        out["grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        out["entropy/coef"] = coef
        self.entropy.update(out.get("entropy", 0.0))
        out["lr"] = self.updater.lr()
        out["timing/learner_s"] = time.perf_counter() - start
        return out | all_reduce(self.peak.metrics(), op="max")

    def _normalizer(self, batch: TrainBatch, prompts: torch.Tensor) -> float:
        """The loss divisor of a minibatch (its tokens, or its sequences) over all ranks, shared by all its
        micro-batches."""
        rows = batch.rows_of(prompts)
        if self.loss_config.aggregation == "token-mean":
            local = float(batch.completion_mask_B_Lc[rows].sum())
        else:
            local = float(len(rows))
        return all_reduce({"n": local})["n"]

    # ---- cold-start SFT (rlvr/learner/sft.py) ----
    def start_sft(self, samples: list[Sample], *, batch_size: int, prompt_template: str, system_prompt: str,
                  response_template: str, optim: OptimSpec, seed: int) -> int:
        """Tokenise (prompt, answer) pairs once; `sft_steps` then trains on shuffled batches of them.
        Returns the number of pairs."""
        self.sft = ColdStart(self.model, self.tokenizer, lambda batch: self._logprobs(self.model, batch)[0], samples,
                             batch_size=batch_size, prompt_template=prompt_template, system_prompt=system_prompt,
                             response_template=response_template, optim=optim, seed=seed)
        return len(self.sft)

    def sft_steps(self, n: int) -> dict[str, float]:
        """n supervised steps (cross-entropy on answer tokens); returns the mean loss and token accuracy."""
        if self.sft is None:
            raise RuntimeError("sft_steps before start_sft")
        return self.sft.steps(n)

    # ---- weights: one seam (`_weights`), handed to every transport by rlvr/sync/handout.py ----
    def gather_weights(self) -> None:
        """Every rank joins the gather of the full weights (a collective under ZeRO-3); rank 0 keeps them for
        `_weights` and `save`. Other engines need no gather: rank 0 has the full weights."""
        full = self.updater.full_weights(self.compute_dtype) if self.updater is not None else None
        self._gathered = full if self.rank == 0 else None

    def _weights(self) -> list[tuple[str, torch.Tensor]]:
        """The full weights this learner hands out (HF names): rank 0's ZeRO-3 gather when one was made for
        this sync (`gather_weights`), LoRA's merged weights, else the model's own parameters. Every transport
        reads them here."""
        if self._gathered is not None:
            return list(self._gathered.items())
        if is_lora(self.model):  # W0 + scale * B A under the base model's names (rlvr/learner/policy_model.py)
            return list(named_weights(self.model, self.compute_dtype, device=str(self.device)).items())
        return list(self.model.named_parameters())

    def named_weights(self) -> dict[str, torch.Tensor]:
        """HF-named parameters on CPU in the engines' dtype (the object-store sync, pi_ref, the critic)."""
        return self.handout.named_weights()

    def write_shared_weights(self):
        """Write the weights into this learner's shared-memory file; returns its `Manifest`."""
        return self.handout.write_shared()

    def unlink_shared_weights(self) -> None:
        self.handout.unlink_shared()

    def init_weight_sender(self, workers: list, tp_sizes: list[int], backend: str = "nccl",
                           timeout_s: float = 600.0) -> None:
        """Open the weight-transfer group with the engines (rlvr/sync/transports.py `open_weight_sender`)."""
        self.handout.open_sender(workers, tp_sizes, backend, timeout_s)

    def send_weights(self) -> None:
        self.handout.send()

    def save(self, out_dir: str) -> str:
        """A plain Hugging Face folder in the run's dtype, LoRA adapters merged in; rank 0 writes (under
        ZeRO-3 from the weights the ranks gathered, `gather_weights`)."""
        if self.rank != 0:
            return out_dir
        state, self._gathered = self._gathered, None
        if state is not None:
            save_hf_atomic(self.model, self.tokenizer, out_dir, state_dict=state)
            return out_dir
        export_hf(self.model, self.tokenizer, out_dir, self.compute_dtype)
        return out_dir

    def ready(self) -> dict:
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": str(self.device),
                "node": ray.get_runtime_context().get_node_id(), "gpu_ids": ray.get_gpu_ids(),
                "params": sum(p.numel() for p in self.model.parameters())}

    # ---- resumable state ----
    def save_state(self, out_dir: str) -> str:
        """Everything this rank needs to continue RL exactly (rlvr/runtime/resume.py); every rank gets the same call.

        Rank 0 writes the fp32 master weights as a plain HF folder (model/; under ZeRO-3 gathered, a
        collective; a LoRA run's merged, with the adapter itself in adapter/); each rank's engine writes its
        optimizer and scheduler (`LearnerEngine.save_state`: torch's rank_R/updater.pt, DeepSpeed's own
        format in deepspeed/), and each rank its torch RNG, the step counter that seeds the minibatch shuffle,
        and the entropy control's coefficient. pi_ref is the reference
        actor's, saved by the advantage stage (rlvr/algorithms/estimate.py `WithReference`).
        """
        if self.updater is None:
            raise RuntimeError("save_state before RL started: there is no optimizer state to save yet")
        out, rank = Path(out_dir), self.rank
        mine = out / f"rank_{rank}"
        mine.mkdir(parents=True, exist_ok=True)
        if is_lora(self.model):  # (LoRA never runs under ZeRO-3: config.py refuses it)
            if rank == 0:
                export_hf(self.model, self.tokenizer, out / "model", torch.float32)  # merged, for `rlvr eval`
                save_adapter(self.model, self.tokenizer, out / "adapter")  # all that training changes
        elif rank == 0 or self.updater.sharded:
            weights = self.updater.full_weights(torch.float32)  # fp32: the master weights, bit for bit
            if rank == 0:
                self.model.save_pretrained(out / "model", state_dict=weights)
                self.tokenizer.save_pretrained(out / "model")
        self.updater.save_state(out, rank)
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        torch.save(rng, mine / "rng.pt")
        (mine / "learner.json").write_text(json.dumps({"steps": self.steps, "entropy": self.entropy.state()}) + "\n")
        return out_dir

    def load_state(self, in_dir: str) -> int:
        """Restore what `save_state` wrote (instead of `set_reference` when a run resumes): weights,
        optimizer and scheduler, RNG, step counter, entropy control. Returns the step counter."""
        from transformers import AutoModelForCausalLM

        src, rank = Path(in_dir), self.rank
        mine = src / f"rank_{rank}"
        if self.updater is not None:
            raise RuntimeError("load_state after RL started: resume into a fresh learner")
        if is_lora(self.model):  # the base weights are the run's starting model; the adapter is the rest
            load_adapter(self.model, src / "adapter")
        else:
            self.model.load_state_dict(AutoModelForCausalLM.from_pretrained(src / "model", dtype=torch.float32).state_dict())
        self._start_engine()
        self.updater.load_state(src, rank)
        rng = torch.load(mine / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        state = json.loads((mine / "learner.json").read_text())
        self.steps = int(state["steps"])
        self.entropy.restore(state["entropy"])
        return self.steps


_EMPTY = torch.empty(0, dtype=torch.long)  # a padding micro-batch: runs a forward and a zero backward
_DUMMY = torch.tensor([0])  # ...on the batch's first completion


def _reduce_stats(stats: LossStats) -> LossStats:
    """The group's loss statistics: sums and token counts added over the ranks, maxima maxed."""
    if world_size() == 1:
        return stats
    sums = all_reduce({f"s/{k}": v for k, v in stats.sums.items()} | {f"l/{k}": v for k, v in stats.losses.items()}
                      | {"tokens": stats.tokens})
    out = LossStats(tokens=sums.pop("tokens"))
    out.sums = {k[2:]: v for k, v in sums.items() if k.startswith("s/")}
    out.losses = {k[2:]: v for k, v in sums.items() if k.startswith("l/")}
    out.maxima = all_reduce(dict(stats.maxima), op="max")
    return out



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
        sums = all_reduce({"sum": self.sum, "count": float(self.count)})
        top = all_reduce({"max": self.max}, op="max")["max"]
        return {"logprob_diff/max": top, "logprob_diff/mean": sums["sum"] / max(1.0, sums["count"])}
