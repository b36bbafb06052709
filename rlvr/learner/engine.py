"""Learner engines: how one rank of the learner group wraps its model, joins the others in each update,
and hands out the full weights.

    join_group(rank, world, address, port, backend="gloo", timeout_s=1800)   # once per rank process
    engine = make_engine("deepspeed", model, spec, zero_stage=3, compute_dtype=torch.float32)
    loss = engine.loss_scale * micro_loss; engine.backward(loss) ...; engine.step()
    weights = engine.full_weights(torch.bfloat16)   # every rank calls it under ZeRO-3; rank 0 uses it
    engine.save_state(folder, rank); engine.load_state(folder, rank)   # optimizer, scheduler: resume exactly

Two implementations of one protocol:
- `TorchEngine`: plain torch AdamW on every rank, gradients summed across ranks before clipping (what
  DDP does, without its wrapper: ranks may run different numbers of micro-batches, and the loss is already
  normalised by the global token count, so a sum, not a mean, gives the single-rank update).
- `DeepSpeedEngine`: DeepSpeed ZeRO stage 0-3 (Rajbhandari et al. 2020). DeepSpeed averages gradients over
  the data-parallel ranks, so each micro-batch loss is scaled by the world size. Under ZeRO-3 the
  parameters are partitioned: module forwards gather their own, so the LM head runs as a module (the
  logits path) instead of the fused head that reads its weight directly, and `full_weights` gathers layer
  by layer. Collective calls (forwards under ZeRO-3, backwards under ZeRO-2/3) must be made by every
  rank the same number of times: the learner pads with zero-weight micro-batches (`rlvr/learner/actor.py`).
FSDP2 can be added behind the same protocol.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from rlvr.learner.optim import DeepSpeedUpdater, OptimSpec, TorchUpdater


class LearnerEngine(Protocol):
    module: torch.nn.Module  # the model forwards run on
    fused_head: bool  # False: the head's weight is not readable outside its module (ZeRO-3)
    loss_scale: float  # micro-batch losses are multiplied by this before `backward`
    sharded: bool  # parameters partitioned over the ranks (ZeRO-3): `full_weights` is a collective

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        """Accumulate a micro-batch's gradient; `boundary`: the last before `step` (where DeepSpeed reduces)."""
        ...

    def step(self) -> float:
        """One optimizer update with every rank; returns the global pre-clip gradient norm."""
        ...

    def lr(self) -> float: ...

    def full_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """HF-named full parameters on CPU in `dtype` (tied weights once); a collective under ZeRO-3."""
        ...

    def save_state(self, folder: Path, rank: int) -> None:
        """This rank's part of what continues training exactly (optimizer, scheduler, fp32 masters) under
        `folder`, a folder the ranks share (each engine names its own files); every rank calls it."""
        ...

    def load_state(self, folder: Path, rank: int) -> None:
        """Restore what `save_state` wrote (the module's weights are already the saved ones, or part of it)."""
        ...


def join_group(rank: int, world: int, address: str, port: int, backend: str, timeout_s: float) -> None:
    """This process joins the learner group's torch.distributed group (a no-op for a group of one that
    does not use DeepSpeed). `timeout_s` bounds every collective: a rank that dies or hangs becomes an
    error on the others instead of a wait forever."""
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK="0")  # each rank is its own Ray actor: its GPU (if any) is cuda:0
    if dist.is_initialized():
        raise RuntimeError("this learner already belongs to a process group")
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce(values: dict[str, float], op: str = "sum") -> dict[str, float]:
    """Key-wise sum (or max) of a dict of floats over the ranks. Ranks may hold different keys (a rank
    with no prompts has no loss statistics): the result has every rank's keys, a missing one counting as
    0 in a sum and not at all in a max."""
    if world_size() == 1:
        return values
    every: list = [None] * world_size()
    dist.all_gather_object(every, sorted(values))
    keys = sorted(set().union(*every))
    if not keys:
        return {}
    missing = 0.0 if op == "sum" else float("-inf")
    t = torch.tensor([values.get(k, missing) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return dict(zip(keys, t.tolist()))


def sum_gradients(params: list[torch.Tensor], bucket_bytes: int = 64 * 2**20) -> None:
    """Sum the gradients of `params` over the ranks, in flat buckets (one collective per bucket, not per
    parameter). A parameter a rank did not touch counts as a zero gradient there; one no rank touched
    (a minibatch with no prompts) keeps no gradient, so AdamW skips it as it does on a single rank."""
    touched = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(touched)
    params = [p for p, t in zip(params, touched.tolist()) if t]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    for p in params + [None]:
        if p is not None and (not bucket or (p.grad.dtype == bucket[0].dtype and size < bucket_bytes)):
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
            continue
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
        if p is not None:
            bucket, size = [p.grad], p.grad.numel() * p.grad.element_size()


class TorchEngine:
    def __init__(self, model: torch.nn.Module, spec: OptimSpec, compute_dtype: torch.dtype) -> None:
        self.module, self.fused_head, self.loss_scale, self.sharded = model, True, 1.0, False
        self.updater = TorchUpdater(model, spec)

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        self.updater.backward(loss)

    def step(self) -> float:
        if world_size() > 1:
            # The optimizer's parameters: a bf16 run's gradients have moved into the fp32 masters
            # (TorchUpdater.backward), so it is those that are summed; fp32 parameters are their own.
            sum_gradients(self.updater.masters)
        return self.updater.step()

    def lr(self) -> float:
        return self.updater.lr()

    def full_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """From the fp32 masters where the model's parameters are bf16 compute copies: in fp32 that is the
        trained weights bit for bit, in bf16 the compute copies (each is its master rounded)."""
        master_of = {id(p): m for p, m in zip(self.updater.params, self.updater.masters)}
        return {name: master_of.get(id(p), p).detach().to("cpu", dtype=dtype, copy=True)
                for name, p in self.module.named_parameters()}

    def save_state(self, folder: Path, rank: int) -> None:
        """rank_R/updater.pt: AdamW's moments, the schedule and the fp32 masters of a bf16 model."""
        mine = Path(folder) / f"rank_{rank}"
        mine.mkdir(parents=True, exist_ok=True)
        torch.save(self.updater.state_dict(), mine / "updater.pt")

    def load_state(self, folder: Path, rank: int) -> None:
        self.updater.load_state_dict(torch.load(Path(folder) / f"rank_{rank}" / "updater.pt", weights_only=True))


class DeepSpeedEngine:
    def __init__(self, model: torch.nn.Module, spec: OptimSpec, zero_stage: int, compute_dtype: torch.dtype) -> None:
        self.updater = DeepSpeedUpdater(model, spec, zero_stage, compute_dtype)
        self.module = self.updater.engine.module
        self.zero_stage = zero_stage
        self.fused_head = zero_stage < 3
        self.sharded = zero_stage == 3
        self.loss_scale = float(world_size())  # DeepSpeed averages gradients over the ranks; ours add up

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        self.updater.backward(loss, boundary)

    def step(self) -> float:
        return self.updater.step()

    def lr(self) -> float:
        return self.updater.lr()

    def full_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if self.zero_stage < 3:
            return {name: p.detach().to("cpu", dtype=dtype, copy=True) for name, p in self.module.named_parameters()}
        import deepspeed

        out = {}
        # One module's own parameters at a time: peak extra memory is one layer, not the model.
        for prefix, module in self.module.named_modules():
            own = list(module.named_parameters(prefix=prefix, recurse=False))
            if not own:
                continue
            with deepspeed.zero.GatheredParameters([p for _, p in own], modifier_rank=None):
                for name, p in own:
                    out[name] = p.detach().to("cpu", dtype=dtype, copy=True)
        return out

    def save_state(self, folder: Path, rank: int) -> None:
        """deepspeed/: DeepSpeed's own format, one folder for all ranks (each writes its ZeRO partition;
        a collective call)."""
        self.updater.save_checkpoint(Path(folder) / "deepspeed")

    def load_state(self, folder: Path, rank: int) -> None:
        self.updater.load_checkpoint(Path(folder) / "deepspeed")


def make_engine(backend: str, model: torch.nn.Module, spec: OptimSpec, zero_stage: int = 2,
                compute_dtype: torch.dtype = torch.float32) -> LearnerEngine:
    if backend == "deepspeed":
        return DeepSpeedEngine(model, spec, zero_stage, compute_dtype)
    return TorchEngine(model, spec, compute_dtype)
