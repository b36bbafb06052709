"""From scored groups to the learner's TrainBatch: the advantage stage, chosen once when the run is built.

    stage = build_stage(cfg, model_path, learner, plan)  # rlvr/learner/build.py: starts the critic / teacher / reference
    stage.prepare(learner)                       # once, after SFT: critic and reference start from the policy
    batch = stage.make_batch(scored_PG)          # advantages (and values, returns, teacher and reference log-probs)
    critic_metrics = stage.update(batch)         # starts PPO's critic update beside the policy's
    metrics = learner.train_step(batch) | critic_metrics()   # `learner`: the LearnerGroup

`OutcomeAdvantages`: one advantage per rollout from the table in `rlvr/algorithms/advantages.py` (GRPO, Dr. GRPO,
RLOO, REINFORCE++, REINFORCE++-baseline). `CriticAdvantages`: PPO (Schulman et al. 2017) with GAE over the
critic's values, the outcome reward on each completion's last token; the critic trains on the returns
while the policy trains. `WithTeacher`: adds a distillation teacher's log-probs of the sampled tokens;
`WithReference`: the reference policy's (a KL term in the loss, or the `kl` metric). `KLPenalty` (loss.kl_in =
"reward"): kl_coef times the per-token KL to the reference comes off the reward before the advantages
(Ouyang et al. 2022, InstructGPT, eq. 2; REINFORCE++): per token for GAE; for the outcome estimators with a
token scale (REINFORCE++'s "batch-token", its default) as each token's return-to-go sum_{i >= t} KL_i,
with a per-rollout scale summed over the completion and taken off its reward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from rlvr.algorithms.advantages import (TOKEN_NORMS, gae, group_advantages, outcome_token_rewards, resolve_norm,
                                        scale, token_advantages)
from rlvr.algorithms.batch import TrainBatch, make_train_batch
from rlvr.algorithms.losses import kl_estimate
from rlvr.runtime.remote import wait
from rlvr.types import ScoredRollout

Pending = Callable[[], dict[str, float]]


def _none() -> dict[str, float]:
    return {}


class AdvantageStage(Protocol):
    def prepare(self, learner) -> None: ...

    def make_batch(self, scored_PG: list[list[ScoredRollout]]) -> TrainBatch: ...

    def update(self, batch: TrainBatch) -> Pending: ...

    def save_state(self, out_dir: Path) -> None:
        """A resumable checkpoint's part of the stage (PPO's critic); nothing for stateless stages."""
        ...

    def load_state(self, in_dir: Path) -> None: ...


def rewards_of(scored_PG: list[list[ScoredRollout]]) -> torch.Tensor:
    """[P, G] rewards, NaN where a reward failed (groups of a step all have G rollouts)."""
    return torch.tensor([[s.reward for s in group] for group in scored_PG], dtype=torch.float32)


class Reference:
    """The frozen reference policy pi_ref: its own actor (`rlvr/learner/teacher.py`'s frozen scorer), started from
    the policy's weights when RL starts (after SFT), placed like the critic and the teacher; the learner
    ranks hold no copy of it."""

    def __init__(self, actor, timeout_s: float) -> None:
        self.actor, self.timeout_s = actor, timeout_s

    def prepare(self, learner) -> None:
        wait(self.actor.load_weights.remote(learner.named_weights()), role="reference", call="load_weights",
             timeout_s=self.timeout_s)

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        return wait(self.actor.logprobs.remote(batch), role="reference", call="logprobs", timeout_s=self.timeout_s)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        weights = wait(self.actor.named_weights.remote(), role="reference", call="named_weights", timeout_s=self.timeout_s)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))

    def load(self, path: Path) -> None:
        from safetensors.torch import load_file

        wait(self.actor.load_weights.remote(load_file(str(path))), role="reference", call="load_weights",
             timeout_s=self.timeout_s)


class KLPenalty:
    def __init__(self, learner, reference: Reference, coef: float, estimator: str) -> None:
        self.learner, self.reference, self.coef, self.estimator = learner, reference, coef, estimator

    def __call__(self, batch: TrainBatch) -> torch.Tensor:
        """coef * the per-token KL estimate of the current policy to pi_ref, [B, Lc], 0 at padding."""
        kl = kl_estimate(self.learner.logprobs(batch), self.reference.logprobs(batch), self.estimator)
        return self.coef * torch.where(batch.completion_mask_B_Lc, kl, 0.0)


def _penalised(scored_PG: list[list[ScoredRollout]], penalty: KLPenalty) -> list[list[ScoredRollout]]:
    """The groups with each trained rollout's reward lowered by its summed KL penalty."""
    per_row = iter(penalty(make_train_batch(scored_PG, [[0.0] * len(g) for g in scored_PG])).sum(1).tolist())
    return [
        [dataclasses.replace(s, reward=s.reward - next(per_row)) if s.ok and s.rollout.num_tokens else s for s in g]
        for g in scored_PG
    ]  # the same rows, in the same order, as make_train_batch keeps


class OutcomeAdvantages:
    def __init__(self, estimator: str, norm: str, kl_penalty: KLPenalty | None = None) -> None:
        self.estimator, self.norm, self.kl_penalty = estimator, norm, kl_penalty

    def prepare(self, learner) -> None:
        pass

    def make_batch(self, scored_PG: list[list[ScoredRollout]]) -> TrainBatch:
        if self.estimator == "none":  # pure distillation: the teacher supplies every token's signal
            return make_train_batch(scored_PG, [[0.0] * len(g) for g in scored_PG])
        if resolve_norm(self.estimator, self.norm) in TOKEN_NORMS:  # r - b per token, scaled over tokens
            batch = make_train_batch(scored_PG, group_advantages(rewards_of(scored_PG), self.estimator, self.norm).tolist())
            kl = self.kl_penalty(batch) if self.kl_penalty is not None else None
            mask = batch.completion_mask_B_Lc
            return dataclasses.replace(batch, advantages_B_Lc=token_advantages(batch.advantages_B_Lc, mask, kl))
        if self.kl_penalty is not None:
            scored_PG = _penalised(scored_PG, self.kl_penalty)
        advantages_P_G = group_advantages(rewards_of(scored_PG), self.estimator, self.norm)
        return make_train_batch(scored_PG, advantages_P_G.tolist())

    def update(self, batch: TrainBatch) -> Pending:
        return _none

    def save_state(self, out_dir: Path) -> None:
        pass

    def load_state(self, in_dir: Path) -> None:
        pass


class CriticAdvantages:
    def __init__(self, critic, gamma: float, lam: float, norm: str, from_policy: bool, timeout_s: float,
                 kl_penalty: KLPenalty | None = None, concurrent: bool = True) -> None:
        self.critic, self.gamma, self.lam, self.from_policy = critic, gamma, lam, from_policy
        self.kl_penalty, self.concurrent, self.timeout_s = kl_penalty, concurrent, timeout_s
        self.norm = "batch" if norm in ("auto", "batch-token") else norm  # GAE's advantages are per token already

    def prepare(self, learner) -> None:
        if self.from_policy:  # the trunk starts from the policy as it is now (after SFT)
            self._wait(self.critic.load_policy_weights.remote(learner.named_weights()), "load_policy_weights")

    def make_batch(self, scored_PG: list[list[ScoredRollout]]) -> TrainBatch:
        zeros = [[0.0] * len(g) for g in scored_PG]
        batch = make_train_batch(scored_PG, zeros)  # drops failed rewards and empty completions
        rewards_B = torch.tensor([s.reward for g in scored_PG for s in g if s.ok and s.rollout.num_tokens])
        mask = batch.completion_mask_B_Lc
        values = self._wait(self.critic.values.remote(batch), "values")
        token_rewards = outcome_token_rewards(rewards_B, mask)
        if self.kl_penalty is not None:
            token_rewards = token_rewards - self.kl_penalty(batch)
        advantages, returns = gae(token_rewards, values, mask, self.gamma, self.lam)
        advantages = torch.where(mask, scale(advantages, mask, self.norm), 0.0)
        return dataclasses.replace(batch, advantages_B_Lc=advantages, returns_B_Lc=returns, values_B_Lc=values)

    def update(self, batch: TrainBatch) -> Pending:
        if not self.concurrent:
            # On one machine's cores two trainings at once only fight over them (each process's threads
            # spin on the other's cores), so the critic trains when its metrics are asked for: after the policy.
            return lambda: self._wait(self.critic.train_step.remote(batch), "train_step")
        ref = self.critic.train_step.remote(batch)
        return lambda: self._wait(ref, "train_step")

    def save_state(self, out_dir: Path) -> None:
        self._wait(self.critic.save_state.remote(str(out_dir)), "save_state")

    def load_state(self, in_dir: Path) -> None:  # instead of prepare(): the trunk is the saved one
        self._wait(self.critic.load_state.remote(str(in_dir)), "load_state")

    def _wait(self, ref, call: str):
        return wait(ref, role="critic", call=call, timeout_s=self.timeout_s)


class WithTeacher:
    def __init__(self, inner: AdvantageStage, teacher, timeout_s: float) -> None:
        self.inner, self.teacher, self.timeout_s = inner, teacher, timeout_s

    def prepare(self, learner) -> None:
        self.inner.prepare(learner)

    def make_batch(self, scored_PG: list[list[ScoredRollout]]) -> TrainBatch:
        batch = self.inner.make_batch(scored_PG)
        teacher_logprobs = wait(self.teacher.logprobs.remote(batch), role="teacher", call="logprobs",
                                timeout_s=self.timeout_s)
        return dataclasses.replace(batch, teacher_logprobs_B_Lc=teacher_logprobs)

    def update(self, batch: TrainBatch) -> Pending:
        return self.inner.update(batch)

    def save_state(self, out_dir: Path) -> None:  # the teacher is frozen: nothing of its own
        self.inner.save_state(out_dir)

    def load_state(self, in_dir: Path) -> None:
        self.inner.load_state(in_dir)

class WithReference:
    """Loads pi_ref (the policy as RL starts) before the inner stage prepares, and adds its log-probs of
    the sampled tokens to each batch (`in_batch`: a KL term in the loss, or the `kl` metric; a KL in the
    reward reads pi_ref through `KLPenalty` instead)."""

    def __init__(self, inner: AdvantageStage, reference: Reference, in_batch: bool = True) -> None:
        self.inner, self.reference, self.in_batch = inner, reference, in_batch

    def prepare(self, learner) -> None:
        self.reference.prepare(learner)
        self.inner.prepare(learner)

    def make_batch(self, scored_PG: list[list[ScoredRollout]]) -> TrainBatch:
        batch = self.inner.make_batch(scored_PG)
        if not self.in_batch:
            return batch
        return dataclasses.replace(batch, ref_logprobs_B_Lc=self.reference.logprobs(batch))

    def update(self, batch: TrainBatch) -> Pending:
        return self.inner.update(batch)

    def save_state(self, out_dir: Path) -> None:  # pi_ref is frozen, but it is the policy as RL began
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.reference.save(Path(out_dir) / "reference.safetensors")
        self.inner.save_state(out_dir)

    def load_state(self, in_dir: Path) -> None:  # replaces prepare(): pi_ref is not the resumed policy
        self.reference.load(Path(in_dir) / "reference.safetensors")
        self.inner.load_state(in_dir)
