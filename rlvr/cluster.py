"""Ray cluster and component builders: config in, actor handles with flat constructor arguments out.

Where each actor runs (GPU bundles, disaggregated or colocated) is rlvr/placement.py's `place(cfg)`; the
builders take its options.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import ray

from rlvr.config import Config
from rlvr.critic import Critic
from rlvr.entropy_control import EntropyControl
from rlvr.estimate import (AdvantageStage, CriticAdvantages, KLPenalty, OutcomeAdvantages, Reference, WithReference,
                           WithTeacher)
from rlvr.learner import Learner
from rlvr.learner_group import GatherFirst, LearnerGroup
from rlvr.models import resolve_model
from rlvr.optim import OptimSpec
from rlvr.placement import Placement, side_roles
from rlvr.rollout import RolloutWorker
from rlvr.teacher import Teacher
from rlvr.weight_sync import ObjectStoreSync, SharedMemorySync, TransferSync, WeightSync


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


def _threads(share: int = 1) -> int:
    """torch threads of a CPU role: every core, or a share of them for learner ranks that run at once."""
    return max(1, (os.cpu_count() or 1) // share)


def mismatch_mode(cfg: Config) -> str:
    """loss.mismatch, with "auto" resolved: token-level TIS where sampler and learner can disagree by more
    than rounding (low precision, several engines); off for one fp32 engine (mismatch ~6e-6)."""
    if cfg.loss.mismatch != "auto":
        return cfg.loss.mismatch
    return "tis" if cfg.model.dtype != "float32" or cfg.rollout.num_engines > 1 else "none"


def norm_length(cfg: Config) -> int:
    """seq-mean-token-sum-norm's constant divisor: loss.norm_length, else the generation limit."""
    return cfg.loss.norm_length or cfg.rollout.max_tokens


def build_learner(cfg: Config, model_path: str, options: list[dict]) -> LearnerGroup:
    """The learner group: `learner.ranks` Learner actors, one per entry of `options` (not yet connected)."""
    on_gpu, l = cfg.learner.gpus > 0, cfg.learner
    actors = [
        Learner.options(**options[rank]).remote(
            model_path,
            dtype=cfg.model.dtype,
            optim=OptimSpec(lr=l.lr, betas=l.betas, weight_decay=l.weight_decay, grad_clip=l.grad_clip,
                            warmup_steps=l.warmup_steps),
            loss=cfg.loss,
            temperature=cfg.rollout.temperature,
            micro_batch_size=l.micro_batch_size,
            max_tokens_per_micro_batch=l.max_tokens_per_micro_batch,
            activation_checkpointing=l.activation_checkpointing,
            epochs=cfg.algo.epochs,
            minibatches=cfg.algo.minibatches,
            mismatch=mismatch_mode(cfg),
            norm_length=norm_length(cfg),
            entropy=EntropyControl(cfg.loss.entropy_schedule, cfg.loss.entropy_coef, cfg.loss.entropy_coef_end,
                                   cfg.loss.entropy_target, cfg.loss.entropy_lr, cfg.train.steps),
            distill_coef=cfg.distill.coef if cfg.distill.teacher else 0.0,
            backend=l.backend,
            zero_stage=l.zero_stage,
            lora=l.lora,
            device="cuda" if on_gpu else "cpu",
            threads=0 if on_gpu else _threads(l.ranks),
            seed=l.seed,
        )
        for rank in range(l.ranks)
    ]
    zero3 = l.backend == "deepspeed" and l.zero_stage == 3
    return LearnerGroup(actors, cfg.cluster.call_timeout_s, gather_for_sync=zero3)


def build_stage(cfg: Config, model_path: str, learner, plan: Placement) -> AdvantageStage:
    """The advantage stage, with the critic (PPO) and the teacher (distillation) actors it needs (placed by `plan`)."""
    a = cfg.algo
    on_gpu, threads = cfg.learner.gpus > 0, 0 if cfg.learner.gpus else (os.cpu_count() or 1)
    deadline = cfg.cluster.call_timeout_s
    reference = None
    if "reference" in side_roles(cfg):  # pi_ref runs only for a KL term or the `kl` metric
        actor = Teacher.options(**plan.side("reference")).remote(
            model_path, temperature=cfg.rollout.temperature, micro_batch_size=cfg.learner.micro_batch_size,
            max_tokens_per_micro_batch=cfg.learner.max_tokens_per_micro_batch, dtype=cfg.model.dtype,
            device="cuda" if on_gpu else "cpu", threads=threads,
        )
        reference = Reference(actor, deadline)
    penalty = None
    if cfg.loss.kl_in == "reward" and cfg.loss.kl_coef > 0:
        penalty = KLPenalty(learner, reference, cfg.loss.kl_coef, cfg.loss.kl_estimator)
    stage: AdvantageStage = OutcomeAdvantages(a.advantage, a.advantage_norm, penalty)
    if a.advantage == "gae":
        c = cfg.critic
        critic = Critic.options(**plan.side("critic")).remote(
            resolve_model(c.path) if c.path else model_path,
            optim=OptimSpec(lr=c.lr, grad_clip=c.grad_clip), value_clip=c.value_clip, epochs=c.epochs,
            micro_batch_size=c.micro_batch_size, device="cuda" if on_gpu else "cpu", threads=threads,
            seed=cfg.learner.seed,
        )
        stage = CriticAdvantages(critic, a.gamma, a.lam, a.advantage_norm, from_policy=not c.path, timeout_s=deadline,
                                 kl_penalty=penalty,
                                 # GPUs of its own: trains beside the policy; colocated, it shares the policy's
                                 concurrent=on_gpu and not plan.colocated)
    if cfg.distill.teacher:
        teacher = Teacher.options(**plan.side("teacher")).remote(
            resolve_model(cfg.distill.teacher), temperature=cfg.rollout.temperature,
            device="cuda" if on_gpu else "cpu", threads=threads,
        )
        stage = WithTeacher(stage, teacher, deadline)
    if reference is not None:
        stage = WithReference(stage, reference, in_batch=cfg.loss.kl_in == "loss")
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
            weight_transfer=TRANSFER_BACKENDS.get(sync_kind(cfg), ""),
            prompt_template=cfg.data.prompt_template,
            system_prompt=cfg.data.system_prompt,
            seed=r.seed + i,
            engine_index=i,
            num_engines=r.num_engines,
            sleep_mode=cfg.cluster.placement == "colocated",
        )
        for i in range(r.num_engines)
    ]


TRANSFER_BACKENDS = {"nccl": "nccl", "gloo": "rlvr_gloo"}  # rollout.weight_sync -> vLLM weight-transfer backend


def build_weight_sync(cfg: Config, learner: LearnerGroup, workers) -> WeightSync:
    """The weights go from the group's rank 0 (under ZeRO-3 every rank first joins their gather)."""
    kind, timeout_s, source = sync_kind(cfg), cfg.rollout.sync_timeout_s, learner.rank0
    if kind in TRANSFER_BACKENDS:
        tp_sizes = [max(1, cfg.rollout.gpus_per_engine)] * len(workers)  # a CPU engine has one worker
        sync = TransferSync(source, workers, tp_sizes, TRANSFER_BACKENDS[kind], timeout_s)
    elif kind == "shared_memory":
        sync = SharedMemorySync(source, workers, timeout_s)
    else:
        sync = ObjectStoreSync(source, workers, timeout_s)
    return GatherFirst(learner, sync) if learner.gather_for_sync else sync


def sync_kind(cfg: Config) -> str:
    if cfg.rollout.weight_sync != "auto":
        return cfg.rollout.weight_sync
    return "nccl" if cfg.rollout.gpus_per_engine > 0 else "shared_memory"
