"""The learner side of a run, built from the config: the learner group and the advantage stage with the
actors it needs (critic, teacher, reference). Where each actor runs is rlvr/runtime/placement.py's
`place(cfg)`; the builders take its options.
"""

from __future__ import annotations


from rlvr.algorithms.entropy_control import EntropyControl
from rlvr.algorithms.estimate import (
    AdvantageStage,
    CriticAdvantages,
    KLPenalty,
    OutcomeAdvantages,
    Reference,
    WithReference,
    WithTeacher,
)
from rlvr.algorithms.token_advantages import Distillation
from rlvr.config import Config
from rlvr.learner.actor import Learner
from rlvr.learner.critic import Critic
from rlvr.learner.group import LearnerGroup
from rlvr.learner.optim import OptimSpec
from rlvr.learner.teacher import Teacher
from rlvr.models.builtin import resolve_model
from rlvr.runtime.placement import Placement, cpu_threads, side_roles


def _threads(cfg: Config, share: int = 1) -> int:
    """torch threads of a CPU role on the learner's side: its cores (all of them, or what the engines leave
    when they generate at the same time), or a share of them for learner ranks that run at once."""
    return max(1, cpu_threads(cfg)[1] // share)


def mismatch_mode(cfg: Config) -> str:
    """loss.mismatch, with "auto" resolved: token-level TIS where sampler and learner can disagree by more
    than rounding (low precision, several engines, or rollouts from older weights: train.max_staleness > 0);
    off for one fp32 engine on-policy (mismatch ~6e-6)."""
    if cfg.loss.mismatch != "auto":
        return cfg.loss.mismatch
    disagree = cfg.model.dtype != "float32" or cfg.rollout.num_engines > 1 or cfg.train.max_staleness > 0
    return "tis" if disagree else "none"


def norm_length(cfg: Config) -> int:
    """seq-mean-token-sum-norm's constant divisor: loss.norm_length, else the generation limit."""
    return cfg.loss.norm_length or cfg.rollout.max_tokens


def learner_options(cfg: Config, options: dict) -> dict:
    """A learner rank's Ray options, plus TRITON_INTERPRET=1 when `loss.kernel = "triton"` runs without a GPU.

    Triton reads the variable when a kernel module is imported (`@triton.jit` decides then whether the
    kernel is interpreted), so it must be in the actor process's environment from its start: Ray's
    runtime_env sets it before the worker imports anything, and a worker with another environment is a
    new process. Setting os.environ inside the actor would come too late (rlvr.learner.actor imports the
    kernels). "auto" on CPU runs the torch table and needs nothing.
    """
    if cfg.loss.kernel != "triton" or cfg.learner.gpus > 0:
        return options
    runtime_env = dict(options.get("runtime_env") or {})
    runtime_env["env_vars"] = dict(runtime_env.get("env_vars") or {}) | {"TRITON_INTERPRET": "1"}
    return options | {"runtime_env": runtime_env}


def learner_kwargs(cfg: Config) -> dict:
    """The Learner's arguments after the model path (one rank's; every rank gets the same)."""
    on_gpu, l = cfg.learner.gpus > 0, cfg.learner
    return dict(
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
        token_advantages=(Distillation(cfg.distill.coef),) if cfg.distill.teacher else (),
        backend=l.backend,
        zero_stage=l.zero_stage,
        lora=l.lora,
        device="cuda" if on_gpu else "cpu",
        threads=0 if on_gpu else _threads(cfg, l.ranks),
        seed=l.seed,
    )


def build_learner(cfg: Config, model_path: str, options: list[dict]) -> LearnerGroup:
    """The learner group: `learner.ranks` Learner actors, one per entry of `options` (not yet connected)."""
    l = cfg.learner
    actors = [Learner.options(**learner_options(cfg, options[rank])).remote(model_path, **learner_kwargs(cfg))
              for rank in range(l.ranks)]
    zero3 = l.backend == "deepspeed" and l.zero_stage == 3
    return LearnerGroup(actors, cfg.cluster.call_timeout_s, gather_for_sync=zero3)


def build_stage(cfg: Config, model_path: str, learner, plan: Placement) -> AdvantageStage:
    """The advantage stage, with the critic (PPO) and the teacher (distillation) actors it needs (placed by `plan`)."""
    a = cfg.algo
    on_gpu, threads = cfg.learner.gpus > 0, 0 if cfg.learner.gpus else _threads(cfg)
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
