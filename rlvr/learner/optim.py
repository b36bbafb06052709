"""Parameter updates: plain torch AdamW, or DeepSpeed ZeRO (stages 0-2) for models that need it.

Both take micro-batch losses that are already normalised to add up to the minibatch loss, so
`backward` never rescales, and `step` applies one optimizer update and returns the gradient norm.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import torch

from rlvr.runtime.remote import free_port


@dataclass(frozen=True)
class OptimSpec:
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    decay_steps: int = 0  # cosine decay to 10% over this many steps after warm-up; 0: constant


class Updater(Protocol):
    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> float:
        """Clip, update, advance the schedule; returns the pre-clip gradient norm."""
        ...

    def lr(self) -> float: ...


def schedule(spec: OptimSpec):
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""

    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if spec.decay_steps:
            progress = min(1.0, (step - spec.warmup_steps) / spec.decay_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def _adamw(params: list[torch.nn.Parameter], spec: OptimSpec) -> torch.optim.AdamW:
    # fused: one kernel for all parameters instead of a Python loop over them (matters for small models)
    return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=True)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer owns: all of them, or only the adapters of a LoRA model."""
    return [p for p in model.parameters() if p.requires_grad]


class TorchUpdater:
    """AdamW on the model's trainable parameters, with fp32 master weights for low-precision ones.

    Mixed precision as in Micikevicius et al. 2018 (section 3.1), without loss scaling (bf16 has fp32's
    exponent range): a bf16 parameter is the compute copy the forward and backward use; its fp32
    master copy is what AdamW updates, then rounds back into the compute copy. Each micro-batch's bf16
    gradient is added into an fp32 gradient at once, so accumulation over micro-batches is in fp32.
    fp32 parameters are their own masters (nothing is copied).
    """

    def __init__(self, model: torch.nn.Module, spec: OptimSpec) -> None:
        self.model, self.spec = model, spec
        self.params = trainable(model)
        self.masters = [p if p.dtype == torch.float32 else p.detach().float().requires_grad_() for p in self.params]
        self.low = [(p, m) for p, m in zip(self.params, self.masters) if m is not p]
        self.optimizer = _adamw(self.masters, spec)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule(spec))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        for p, master in self.low:
            if p.grad is not None:
                if master.grad is None:
                    master.grad = p.grad.float()
                else:
                    master.grad += p.grad
                p.grad = None

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.masters, self.spec.grad_clip)
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm {norm.item()}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, master in self.low:
                p.copy_(master)
        return norm.item()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        """Optimizer, schedule and the fp32 masters (a bf16 model alone would lose their low bits)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "masters": [m.detach().clone() for _, m in self.low]}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        with torch.no_grad():
            for (p, master), saved in zip(self.low, state["masters"], strict=True):
                master.copy_(saved)
                p.copy_(saved)


def _skip_shared_memory_allreduce_build() -> None:
    """DeepSpeed's comm backend on a CPU accelerator JIT-compiles a shared-memory all-reduce op when it starts
    (deepspeed/comm/torch.py, `build_shm_op`): about 50 s of C++ on a machine's first run, for an op that serves
    only `inference_all_reduce` (never called in training) and that activates only with LOCAL_SIZE set. The
    training collectives go through torch.distributed (gloo) either way."""
    import importlib

    # By module path: the attribute `deepspeed.comm.torch` is the torch package (deepspeed.comm imports it).
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


class DeepSpeedUpdater:
    """A DeepSpeed engine around the model, one process (this learner actor) as the whole world.

    Any number of micro-batch backwards may precede a `step()`: the caller marks the last one
    (`boundary=True`, DeepSpeed's `set_gradient_accumulation_boundary`), where the gradients are reduced.
    Several ranks: the process group the learner group opened (`rlvr/learner/engine.py`) is DeepSpeed's world.
    """

    def __init__(self, model: torch.nn.Module, spec: OptimSpec, zero_stage: int, compute_dtype: torch.dtype) -> None:
        import deepspeed

        if not torch.cuda.is_available():
            _skip_shared_memory_allreduce_build()
        if not torch.distributed.is_initialized():  # a learner of one rank: its own world
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            for key in ("RANK", "LOCAL_RANK"):
                os.environ.setdefault(key, "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        config = {
            "train_micro_batch_size_per_gpu": 1,  # batching is ours; DeepSpeed only needs a consistent value
            "gradient_accumulation_steps": 1,
            "gradient_clipping": spec.grad_clip,
            "zero_optimization": {"stage": zero_stage},
            "bf16": {"enabled": compute_dtype == torch.bfloat16},
            "steps_per_print": 10**9,
        }
        optimizer = _adamw(trainable(model), spec)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(spec))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.zero_stage = zero_stage

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        # Our forwards call the module, not `engine.forward`, which is where DeepSpeed marks a new
        # micro-batch; without the mark ZeRO-3 overwrites the accumulated gradient instead of adding to it.
        if hasattr(self.engine.optimizer, "clear_backward_seen_flag"):
            self.engine.optimizer.clear_backward_seen_flag()
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        unpartitioned = None
        if self.zero_stage == 0:  # DeepSpeed reports a norm only for ZeRO optimizers
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            unpartitioned = torch.nn.utils.get_total_norm(grads).item()
        self.engine.step()
        norm = self.engine.get_global_grad_norm() if unpartitioned is None else unpartitioned
        if norm is not None and not math.isfinite(float(norm)):
            raise FloatingPointError(f"non-finite gradient norm {norm}")
        return float(norm) if norm is not None else float("nan")

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    # ---- resumable state (rlvr/runtime/resume.py) ----
    # DeepSpeed's own format: each rank writes its ZeRO partition of the optimizer state (a collective
    # call, every rank must make it), so the folder is shared by the ranks, not one per rank.
    _TAG = "state"

    def save_checkpoint(self, folder: str | os.PathLike) -> None:
        self.engine.save_checkpoint(str(folder), tag=self._TAG, save_latest=False)

    def load_checkpoint(self, folder: str | os.PathLike) -> None:
        path, _ = self.engine.load_checkpoint(str(folder), tag=self._TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint (tag {self._TAG!r}) in {folder}")
