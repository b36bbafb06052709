"""Where each role runs: Ray actor options for the learner ranks, the rollout engines and the models beside the learner.

    plan = place(cfg)                                   # reserves every GPU up front, or fails naming the bundles
    ranks = [Learner.options(**o).remote(...) for o in plan.learners]
    workers = [RolloutWorker.options(**o).remote(...) for o in plan.engines]
    with engines_asleep(workers, plan, timeout_s):      # colocated: vLLM frees its GPU memory while the learner trains
        learner.train_step(batch)

Two modes (`cluster.placement`):

- **disaggregated**: engines and learner ranks on separate GPUs. Generation and training may overlap; each
  side keeps its memory (vLLM its weights and KV cache, the learner its weights, gradients and optimizer state).
- **colocated**: each learner rank shares one GPU with one engine worker (fractional `num_gpus` on the
  same bundle, as OpenRLHF and verl do); the engines sleep (vLLM's sleep mode, level 1: KV cache freed,
  weights offloaded to host memory) while the learner trains and wake before the weight sync. Half the
  GPUs for the same model, at the cost of the sleep/wake copies and no overlap of the two phases.

Bundles, and why the groups are split the way they are:

- A rollout engine gets its own placement group of `rollout.gpus_per_engine` bundles of one GPU each,
  STRICT_PACK, so a tensor-parallel engine's GPUs are on one node (one PACK group over all GPUs may split
  an engine across nodes). vLLM's Ray executor requires exactly this: it refuses a placement group holding
  a bundle of more than one GPU, and takes the group the engine's actor was scheduled in
  (`ray.util.get_current_placement_group()`, vllm/engine/arg_utils.py) and the bundles listed in
  `VLLM_RAY_BUNDLE_INDICES` (vllm/v1/executor/ray_executor_v2.py), starting one worker per bundle with
  `VLLM_RAY_PER_WORKER_GPUS` GPUs. A tensor-parallel engine's actor therefore holds no GPU (it would take
  one of the engine's own, and the executor would then wait for a GPU that never frees: the hang of
  issue 9); an engine of one GPU holds it directly and runs vLLM in-process, as before.
- Disaggregated learner ranks (and the critic / teacher / reference beside them) get one placement group
  per role, one bundle of `learner.gpus` GPUs per rank (PACK). Ray schedules an actor inside one bundle,
  never across bundles, so a rank of k GPUs needs one k-GPU bundle (a bundle always lies on one node);
  vLLM never sees these groups, so its one-GPU-per-bundle rule does not apply.
- Colocated, learner rank r sits on GPU r of the engines' bundles (engine r // t, bundle r % t) with a
  fraction of it; so does rank r of each side role. Ray's fractions only keep the count; memory is shared
  by taking turns (sleep), which Ray does not police.

Each group is reserved up front, largest first (Ray places separate groups greedily, one at a time), and
all are awaited together with one deadline: a cluster that cannot hold them fails naming every bundle,
before any model is loaded, instead of waiting forever. On a CPU machine
(all GPU counts 0) nothing is reserved: every role runs with `num_cpus=0` and every core as torch threads,
since the synchronous loop has the roles take turns.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlvr.config import Config
from rlvr.runtime.remote import wait


@dataclass(frozen=True)
class Placement:
    """Ray actor options per role; `learners[r]` starts learner rank r, `engines[e]` rollout engine e."""

    learners: list[dict]
    engines: list[dict]
    sides: dict[str, list[dict]]  # role ("critic", "teacher", "reference") -> options per rank
    colocated: bool
    groups: list[PlacementGroup] = field(default_factory=list)  # held until release()

    def side(self, role: str, rank: int = 0) -> dict:
        """Options for rank `rank` of a model beside the learner; `role` must have been asked of `place`."""
        if role not in self.sides:
            raise KeyError(f"no placement for {role!r}: place(cfg, sides=...) reserved {sorted(self.sides)}")
        return self.sides[role][rank]

    def release(self) -> None:
        for group in self.groups:
            ray.util.remove_placement_group(group)


def side_roles(cfg: Config) -> tuple[str, ...]:
    """The models beside the learner that this config starts (one actor each): PPO's critic, a distillation
    teacher, the reference policy of a KL term or the `kl` metric."""
    return ((("critic",) if cfg.algo.advantage == "gae" else ()) + (("teacher",) if cfg.distill.teacher else ())
            + (("reference",) if cfg.loss.kl_coef > 0 or cfg.algo.track_ref_kl else ()))


def place(cfg: Config, timeout_s: float = 120.0, sides: tuple[str, ...] | None = None) -> Placement:
    """Reserve the GPUs of every role of a training run; `sides` defaults to `side_roles(cfg)`."""
    sides = side_roles(cfg) if sides is None else sides
    ranks, k, t = cfg.learner.ranks, cfg.learner.gpus, cfg.rollout.gpus_per_engine
    colocated = cfg.cluster.placement == "colocated"
    if not k and not t:
        engine_threads, learner_threads = cpu_threads(cfg)
        cpu, engine = (dict(num_cpus=0, runtime_env=_cpu_env(n)) for n in (learner_threads, engine_threads))
        return Placement([cpu] * ranks, [engine] * cfg.rollout.num_engines, {r: [cpu] for r in sides}, colocated)
    if not (k and t):
        raise ValueError(f"learner.gpus = {k} and rollout.gpus_per_engine = {t}: "
                         "mixing CPU and GPU roles is not supported")
    if not colocated:
        learner_group = ([{"GPU": float(k)}] * ranks, "PACK", f"learner ({ranks} ranks of {k} GPUs)")
        side_groups = [([{"GPU": float(k)}], "PACK", f"{role} ({k} GPUs)") for role in sides]  # one actor each
        groups = _reserve([learner_group, *side_groups, *_engine_groups(cfg)], timeout_s)
        engines = [_engine_options(g, t, share=1.0) for g in groups[1 + len(sides):]]
        return Placement(
            _ranks_on(groups[0], k, ranks), engines,
            {role: _ranks_on(g, k, 1) for role, g in zip(sides, groups[1:])}, colocated, groups,
        )
    # Colocated (Config checked learner.gpus == 1 and engine GPUs == ranks): the engines' bundles are the GPUs.
    groups = _reserve(_engine_groups(cfg), timeout_s)
    share = 1.0 / (2 + len(sides))  # engine worker, learner rank, one rank of each side role
    slots = [(g, b) for g in groups for b in range(t)]

    def on_slots(n: int) -> list[dict]:
        return [_options(g, share, b) for g, b in slots[:n]]

    return Placement(on_slots(ranks), [_engine_options(g, t, share) for g in groups],
                     {role: on_slots(1) for role in sides}, colocated, groups)


def engine_options(cfg: Config, timeout_s: float = 120.0) -> list[dict]:
    """Ray options for the rollout engines alone (`rlvr eval`): no learner resources are reserved."""
    t = cfg.rollout.gpus_per_engine
    if not t:
        return [dict(num_cpus=0, runtime_env=_cpu_env())] * cfg.rollout.num_engines
    return [_engine_options(g, t, share=1.0) for g in _reserve(_engine_groups(cfg), timeout_s)]


def _engine_groups(cfg: Config) -> list[tuple[list[dict], str, str]]:
    t = cfg.rollout.gpus_per_engine
    return [([{"GPU": 1.0}] * t, "STRICT_PACK", f"engine {e} ({t} GPUs on one node)")
            for e in range(cfg.rollout.num_engines)]


def _engine_options(group: PlacementGroup, t: int, share: float) -> dict:
    """An engine's actor: on its one GPU (t = 1), or holding none and pointing vLLM's Ray executor at its t bundles."""
    if t == 1:
        return _options(group, share, 0)
    env = {"VLLM_RAY_BUNDLE_INDICES": ",".join(map(str, range(t))), "VLLM_RAY_PER_WORKER_GPUS": str(share)}
    return _options(group, 0, 0) | {"runtime_env": {"env_vars": env}}


def _ranks_on(group: PlacementGroup, gpus: float, ranks: int) -> list[dict]:
    return [_options(group, gpus, r) for r in range(ranks)]


def _options(group: PlacementGroup, gpus: float, bundle: int) -> dict:
    # capture_child_tasks: what the actor starts (vLLM's workers) stays in the group.
    strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle,
                                                placement_group_capture_child_tasks=True)
    return dict(num_cpus=0, num_gpus=gpus, scheduling_strategy=strategy)


def _reserve(specs: list[tuple[list[dict], str, str]], timeout_s: float) -> list[PlacementGroup]:
    """Placement groups of (bundles, strategy, role) in order, or an error naming them all when the cluster
    cannot hold them within `timeout_s` (CPUs are not reserved: small clusters would run out first)."""
    # Ray places groups one at a time, in the order they are made, each where it fits first: the largest
    # units (what must share one node) go first, or small ones can leave no node with room for a big one
    # (first-fit decreasing: e.g. two learner ranks of 1 GPU packed onto the node a 3-GPU engine needed).
    def unit(spec: tuple[list[dict], str, str]) -> float:
        bundles, strategy, _ = spec
        gpus = [b["GPU"] for b in bundles]
        return sum(gpus) if strategy == "STRICT_PACK" else max(gpus)

    made = {i: placement_group(specs[i][0], strategy=specs[i][1])
            for i in sorted(range(len(specs)), key=lambda i: -unit(specs[i]))}
    groups = [made[i] for i in range(len(specs))]
    ready, _ = ray.wait([g.ready() for g in groups], num_returns=len(groups), timeout=timeout_s)
    if len(ready) < len(groups):
        for group in groups:
            ray.util.remove_placement_group(group)
        wanted = "; ".join(f"{role}: {bundles} {strategy}" for bundles, strategy, role in specs)
        raise RuntimeError(f"the cluster cannot hold the requested GPUs within {timeout_s:.0f} s: bundles {wanted}; "
                           f"cluster resources {ray.cluster_resources()}")
    return groups


def cpu_threads(cfg: Config) -> tuple[int, int]:
    """Threads of each CPU engine, and of the learner side (its ranks share them; critic, teacher and reference
    run in its turn). Synchronous, the stages take turns, so each gets every core; asynchronous
    (train.max_staleness > 0), engines and learner run at once, so the cores are split
    (cluster.rollout_cores for the engines, default half) rather than oversubscribed."""
    cores = os.cpu_count() or 1
    if not cfg.train.max_staleness:
        return cores, cores
    engines = min(cfg.cluster.rollout_cores or max(1, cores // 2), max(1, cores - 1))
    return max(1, engines // cfg.rollout.num_engines), max(1, cores - engines)


def _cpu_env(threads: int | None = None) -> dict:
    # Ray sets OMP_NUM_THREADS=1 in actors; vLLM's CPU engine (VLLM_CPU_OMP_THREADS_BIND=nobind) and torch read it.
    threads = str(threads or os.cpu_count() or 1)
    return {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}


@contextlib.contextmanager
def engines_asleep(workers: list, plan: Placement, timeout_s: float) -> Iterator[None]:
    """Colocated: the engines sleep (GPU memory freed for the learner) inside the block and wake after it,
    each call with a deadline; disaggregated: nothing happens. Wrap the learner step, before the weight sync."""
    if not plan.colocated:
        yield
        return
    _each([w.sleep.remote() for w in workers], "sleep", timeout_s)
    try:
        yield
    finally:
        _each([w.wake_up.remote() for w in workers], "wake_up", timeout_s)


def _each(refs: list, call: str, timeout_s: float) -> None:
    """Wait for one call per engine (`call` names it in errors), all within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for e, ref in enumerate(refs):
        wait(ref, role=f"rollout engine {e}", call=call, timeout_s=max(0.0, deadline - time.monotonic()))
