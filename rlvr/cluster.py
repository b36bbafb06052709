"""Ray cluster and component builders: config in, actor handles with flat constructor arguments out.

Placement: one placement group holds a bundle of `learner.gpus` GPUs for the learner and one of
`rollout.gpus_per_engine` GPUs per engine, packed onto as few nodes as possible; a request the cluster
cannot hold fails with the bundles named instead of waiting forever. On a CPU machine every role runs
with 0 GPUs and the roles share the cores, taking turns (the loop is synchronous), so each is given
every core as torch threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlvr.config import Config
from rlvr.critic import Critic
from rlvr.entropy_control import EntropyControl
from rlvr.estimate import AdvantageStage, CriticAdvantages, KLPenalty, OutcomeAdvantages, WithTeacher
from rlvr.learner import Learner
from rlvr.models import resolve_model
from rlvr.optim import OptimSpec
from rlvr.rollout import RolloutWorker
from rlvr.teacher import Teacher
from rlvr.weight_sync import NcclSync, ObjectStoreSync, WeightSync


@contextlib.contextmanager
def ray_cluster(cfg: Config, say: Callable[[str], None] = print) -> Iterator[dict]:
    """Connect to `cluster.address` (or $RAY_ADDRESS), or start a local cluster, and shut it down afterwards.

    A local cluster runs with Ray's token authentication on (Ray 2.60 writes ~/.ray/auth_token on first
    start): it cannot bind all of its services to loopback (GCS, raylet and worker gRPC servers listen on
    every interface), so the token is what keeps others from running code on it. The dashboard and the
    Prometheus endpoint are bound to 127.0.0.1 as far as Ray allows. A given cluster (an address, or the
    RAY_ADDRESS a `ray job submit` driver inherits, where passing num_cpus to ray.init would raise) keeps
    its own settings. Inside an existing Ray session (a test's, or a notebook's) that session is used and
    left running.
    """
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    c = cfg.cluster
    address = c.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # inherited by every Ray process of the cluster
        # `import ray` read RAY_AUTH_MODE already; without a re-read the driver would not present the token
        # its own new cluster asks for (ray._private.authentication_test_utils does the same).
        from ray._raylet import AuthenticationTokenLoader, Config as RayConfig

        RayConfig.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        ray.init(
            address="local",  # a new cluster, even where `ray start` left /tmp/ray/ray_current_cluster behind
            num_cpus=c.num_cpus or os.cpu_count(),
            num_gpus=c.fake_gpus or None,
            object_store_memory=c.object_store_mb * 2**20,
            include_dashboard=c.dashboard,
            dashboard_host=c.dashboard_host,
            dashboard_port=c.dashboard_port,
            _node_ip_address="127.0.0.1",
            _metrics_export_port=c.metrics_export_port or None,
            log_to_driver=True,
        )
        say(f"Ray: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}, metrics at "
              f"http://127.0.0.1:{metrics_port()}/metrics" + (f", dashboard at http://{c.dashboard_host}:"
                                                              f"{c.dashboard_port}" if c.dashboard else ""))
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def metrics_port() -> int:
    """The Prometheus port of this node's metrics agent (cluster.metrics_export_port, or Ray's choice)."""
    node = next(n for n in ray.nodes() if n["NodeID"] == ray.get_runtime_context().get_node_id())
    return int(node["MetricsExportPort"])


def _cpu_env() -> dict:
    # Ray sets OMP_NUM_THREADS=1 in actors; the sync loop lets each stage use every core in turn.
    threads = str(os.cpu_count() or 1)
    return {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}


def placement(cfg: Config, timeout_s: float = 120.0) -> tuple[dict, list[dict]]:
    """Ray options for the learner and for each rollout engine (GPU bundles of one placement group)."""
    gpus = [cfg.learner.gpus] + [cfg.rollout.gpus_per_engine] * cfg.rollout.num_engines
    if not any(gpus):
        return dict(num_cpus=0, runtime_env=_cpu_env()), [dict(num_cpus=0, runtime_env=_cpu_env())] * (len(gpus) - 1)
    if not all(gpus):
        raise ValueError(
            f"learner.gpus = {cfg.learner.gpus} and rollout.gpus_per_engine = {cfg.rollout.gpus_per_engine}: "
            "mixing CPU and GPU roles is not supported"
        )
    bundles = [{"GPU": float(g)} for g in gpus]  # CPUs are not reserved: small clusters would run out first
    group = _reserve(bundles, timeout_s, "(learner first, then one per engine)")
    options = [
        dict(num_cpus=0, num_gpus=g, scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i))
        for i, g in enumerate(gpus)
    ]
    return options[0], options[1:]


def _reserve(bundles: list[dict], timeout_s: float, roles: str):
    """A placement group of these bundles, or an error naming them when the cluster cannot hold them in time."""
    group = placement_group(bundles, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"the cluster cannot hold the requested GPUs within {timeout_s:.0f} s: bundles {bundles} "
            f"{roles}; cluster resources {ray.cluster_resources()}"
        ) from None
    return group


def engine_options(cfg: Config) -> list[dict]:
    """Ray options for the rollout engines alone (`rlvr eval`): no learner resources are reserved."""
    g = cfg.rollout.gpus_per_engine
    return [dict(num_cpus=0, num_gpus=g) if g else dict(num_cpus=0, runtime_env=_cpu_env())] * cfg.rollout.num_engines


def side_options(cfg: Config, timeout_s: float = 120.0) -> dict:
    """Ray options for a model beside the learner (critic, teacher): the learner's GPU count, own bundle."""
    if not cfg.learner.gpus:
        return dict(num_cpus=0, runtime_env=_cpu_env())
    group = _reserve([{"GPU": float(cfg.learner.gpus)}], timeout_s, "(for the critic or teacher)")
    return dict(num_cpus=0, num_gpus=cfg.learner.gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0))


def mismatch_mode(cfg: Config) -> str:
    """loss.mismatch, with "auto" resolved: token-level TIS where sampler and learner can disagree by more
    than rounding (low precision, several engines); off for one fp32 engine (mismatch ~6e-6)."""
    if cfg.loss.mismatch != "auto":
        return cfg.loss.mismatch
    return "tis" if cfg.model.dtype != "float32" or cfg.rollout.num_engines > 1 else "none"


def norm_length(cfg: Config) -> int:
    """seq-mean-token-sum-norm's constant divisor: loss.norm_length, else the generation limit."""
    return cfg.loss.norm_length or cfg.rollout.max_tokens


def build_learner(cfg: Config, model_path: str, options: dict) -> ray.actor.ActorHandle:
    on_gpu = cfg.learner.gpus > 0
    return Learner.options(**options).remote(
        model_path,
        dtype=cfg.model.dtype,
        optim=OptimSpec(
            lr=cfg.learner.lr,
            betas=cfg.learner.betas,
            weight_decay=cfg.learner.weight_decay,
            grad_clip=cfg.learner.grad_clip,
            warmup_steps=cfg.learner.warmup_steps,
        ),
        loss=cfg.loss,
        temperature=cfg.rollout.temperature,
        micro_batch_size=cfg.learner.micro_batch_size,
        epochs=cfg.algo.epochs,
        minibatches=cfg.algo.minibatches,
        track_ref_kl=cfg.algo.track_ref_kl,
        mismatch=mismatch_mode(cfg),
        norm_length=norm_length(cfg),
        entropy=EntropyControl(cfg.loss.entropy_schedule, cfg.loss.entropy_coef, cfg.loss.entropy_coef_end,
                               cfg.loss.entropy_target, cfg.loss.entropy_lr, cfg.train.steps),
        distill_coef=cfg.distill.coef if cfg.distill.teacher else 0.0,
        backend=cfg.learner.backend,
        zero_stage=cfg.learner.zero_stage,
        lora=cfg.learner.lora,
        device="cuda" if on_gpu else "cpu",
        threads=0 if on_gpu else (os.cpu_count() or 1),
        seed=cfg.learner.seed,
    )


def build_stage(cfg: Config, model_path: str, learner) -> AdvantageStage:
    """The advantage stage, with the critic (PPO) and the teacher (distillation) actors it needs."""
    a = cfg.algo
    on_gpu, threads = cfg.learner.gpus > 0, 0 if cfg.learner.gpus else (os.cpu_count() or 1)
    deadline = cfg.cluster.call_timeout_s
    penalty = KLPenalty(learner, cfg.loss.kl_coef, deadline) if cfg.loss.kl_in == "reward" and cfg.loss.kl_coef > 0 else None
    stage: AdvantageStage = OutcomeAdvantages(a.advantage, a.advantage_norm, penalty)
    if a.advantage == "gae":
        c = cfg.critic
        critic = Critic.options(**side_options(cfg)).remote(
            resolve_model(c.path) if c.path else model_path,
            optim=OptimSpec(lr=c.lr, grad_clip=c.grad_clip), value_clip=c.value_clip, epochs=c.epochs,
            micro_batch_size=c.micro_batch_size, device="cuda" if on_gpu else "cpu", threads=threads,
            seed=cfg.learner.seed,
        )
        stage = CriticAdvantages(critic, a.gamma, a.lam, a.advantage_norm, from_policy=not c.path, timeout_s=deadline,
                                 kl_penalty=penalty,
                                 concurrent=on_gpu)  # GPUs of its own: trains beside the policy
    if cfg.distill.teacher:
        teacher = Teacher.options(**side_options(cfg)).remote(
            resolve_model(cfg.distill.teacher), temperature=cfg.rollout.temperature,
            device="cuda" if on_gpu else "cpu", threads=threads,
        )
        stage = WithTeacher(stage, teacher, deadline)
    return stage


def build_rollout_workers(cfg: Config, model_path: str, options: list[dict]) -> list[ray.actor.ActorHandle]:
    r = cfg.rollout
    return [
        RolloutWorker.options(**options[i]).remote(
            model_path,
            dtype=cfg.model.dtype,
            max_model_len=r.max_model_len,
            max_num_seqs=r.max_num_seqs,
            max_num_batched_tokens=r.max_num_batched_tokens,
            tensor_parallel=r.gpus_per_engine,
            gpu_memory_utilization=r.gpu_memory_utilization,
            cpu_kv_cache_gb=r.cpu_kv_cache_gb,
            enforce_eager=r.enforce_eager,
            nccl_weight_transfer=_sync_kind(cfg) == "nccl",
            prompt_template=cfg.data.prompt_template,
            system_prompt=cfg.data.system_prompt,
            seed=r.seed + i,
            engine_index=i,
            num_engines=r.num_engines,
        )
        for i in range(r.num_engines)
    ]


def build_weight_sync(cfg: Config, learner, workers) -> WeightSync:
    if _sync_kind(cfg) == "nccl":
        return NcclSync(learner, workers, [cfg.rollout.gpus_per_engine] * len(workers))
    return ObjectStoreSync(learner, workers)


def _sync_kind(cfg: Config) -> str:
    if cfg.rollout.weight_sync != "auto":
        return cfg.rollout.weight_sync
    return "nccl" if cfg.rollout.gpus_per_engine > 0 and cfg.learner.gpus > 0 else "object_store"
