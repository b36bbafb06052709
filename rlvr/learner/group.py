"""The learner group: N learner ranks (Ray actors) driven as one learner.

    group = LearnerGroup(actors, timeout_s=cfg.cluster.call_timeout_s)   # rlvr/learner/build.py builds it
    group.connect()                       # one torch.distributed group: gloo on CPU, NCCL (+ gloo) on GPU
    metrics = group.train_step(batch)     # each rank trains on its share of each minibatch

Every call fans out to the ranks and waits for all of them with one deadline (a rank that dies or hangs
is an error naming it). The batch goes into the object store once; each rank reads it. The group's shards
(`shard_prompts`: contiguous, balanced by completion tokens) are each rank's prompts for the log-prob
passes (pi_old); the update splits every shuffled minibatch part anew among the ranks, alike on every rank
(`Learner.train_step`), so minibatch j is the one a single rank would take. Sums (loss
normalisers, loss statistics) are reduced inside the group by the ranks themselves, so every rank returns
the group's metrics and rank 0's are kept. Rank 0 is the source of the weights (sync, save).
"""

from __future__ import annotations

import ray
import torch

from rlvr.algorithms.batch import TrainBatch
from rlvr.learner.optim import OptimSpec
from rlvr.runtime.remote import wait_all
from rlvr.types import Sample


class LearnerGroup:
    def __init__(self, actors: list[ray.actor.ActorHandle], timeout_s: float, gather_for_sync: bool = False) -> None:
        self.actors, self.timeout_s, self.gather_for_sync = actors, timeout_s, gather_for_sync
        self.roles = [f"learner rank {r}" for r in range(len(actors))]

    @property
    def rank0(self) -> ray.actor.ActorHandle:
        return self.actors[0]

    def __len__(self) -> int:
        return len(self.actors)

    def _all(self, call: str, refs: list, timeout_s: float | None = None) -> list:
        return wait_all(refs, roles=self.roles, call=call, timeout_s=timeout_s or self.timeout_s)

    def ready(self, timeout_s: float | None = None) -> list[dict]:
        """Every rank has built its model (`timeout_s`: the start's own deadline, default the group's)."""
        return self._all("ready", [a.ready.remote() for a in self.actors], timeout_s)

    def connect(self) -> None:
        """Open the group's process group (every rank joins at once; a group of one needs none unless
        DeepSpeed opens its own world of one)."""
        if len(self.actors) == 1:
            return
        address, port = self._all("group_address", [self.rank0.group_address.remote()])[0]
        self._all("join_group", [a.join_group.remote(r, len(self.actors), address, port, self.timeout_s)
                                 for r, a in enumerate(self.actors)])

    def start_rl(self) -> None:
        """Every rank takes rank 0's weights (SFT ran there) and builds its engine."""
        self._all("set_reference", [a.set_reference.remote() for a in self.actors])

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        ref = ray.put(batch)
        shards = shard_prompts(batch, len(self.actors))
        return self._all("train_step", [a.train_step.remote(ref, s) for a, s in zip(self.actors, shards)])[0]

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """The current policy's [B, Lc] log-probs, each rank scoring its share (under ZeRO-3 a forward is
        the whole group's)."""
        ref = ray.put(batch)
        shards = shard_prompts(batch, len(self.actors))
        return sum(self._all("logprobs", [a.logprobs.remote(ref, s) for a, s in zip(self.actors, shards)]))

    def gather_weights(self) -> None:
        """Before rank 0 hands out the full weights: under ZeRO-3 every rank joins the gather."""
        self._all("gather_weights", [a.gather_weights.remote() for a in self.actors])

    def before_sync(self) -> None:
        """Called before a weight sync reads rank 0's weights: under ZeRO-3 the ranks gather them first."""
        if self.gather_for_sync:
            self.gather_weights()

    def named_weights(self) -> ray.ObjectRef:
        """Rank 0's full HF-named weights, as an object-store reference."""
        self.before_sync()
        return self.rank0.named_weights.remote()

    def save(self, out_dir: str) -> str:
        self.before_sync()
        return self._all("save", [a.save.remote(out_dir) for a in self.actors])[0]

    def save_state(self, out_dir: str) -> str:
        """Every rank writes its part of a resumable checkpoint (rlvr/runtime/resume.py)."""
        return self._all("save_state", [a.save_state.remote(out_dir) for a in self.actors])[0]

    def load_state(self, in_dir: str) -> int:
        """Every rank restores its part (instead of `start_rl` on a resumed run); returns the step counter."""
        return self._all("load_state", [a.load_state.remote(in_dir) for a in self.actors])[0]

    # Cold-start SFT (rlvr/learner/sft.py) runs on rank 0 alone (small models); `start_rl` then copies its
    # weights to the rest.
    def start_sft(self, samples: list[Sample], *, batch_size: int, prompt_template: str, system_prompt: str,
                  response_template: str, optim: OptimSpec, seed: int) -> int:
        """Rank 0 tokenises the (prompt, answer) pairs; returns how many."""
        return self._all("start_sft", [self.rank0.start_sft.remote(
            samples, batch_size=batch_size, prompt_template=prompt_template, system_prompt=system_prompt,
            response_template=response_template, optim=optim, seed=seed)])[0]

    def sft_steps(self, n: int) -> dict[str, float]:
        """n supervised steps on rank 0; its mean loss and token accuracy."""
        return self._all("sft_steps", [self.rank0.sft_steps.remote(n)])[0]


def shard_prompts(batch: TrainBatch, ranks: int, prompts: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Prompt rows per rank: contiguous runs of `prompts` (default: all, in order) with about equal
    completion tokens (every rank gets at least one prompt when there are enough; a rank with none still
    joins each collective with empty work)."""
    prompts = torch.arange(batch.num_prompts) if prompts is None else prompts
    if ranks == 1:
        return [prompts]
    tokens = torch.zeros(batch.num_prompts).index_add_(
        0, batch.prompt_index_B, batch.completion_mask_B_Lc.sum(1).float())[prompts]
    n = len(prompts)
    cumulative = tokens.cumsum(0)
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    # rank r takes the prompts whose token midpoint falls in [r, r + 1) * total / ranks
    mid = cumulative - tokens / 2
    owner = (mid * ranks / max(total, 1e-9)).long().clamp(0, ranks - 1)
    if n >= ranks:  # enough prompts: no rank idles (balance by count where tokens are skewed)
        owner = torch.maximum(owner, torch.arange(n) - (n - ranks))
        owner = torch.minimum(owner, torch.arange(n))
        owner = torch.cummax(owner, 0).values
    return [prompts[owner == r] for r in range(ranks)]
