"""The learner's log-probs (shared-prompt forward, fused head) against a plain full forward, and its updates."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, assert_equals_full_forward, full_forward_logprobs, groups_of  # noqa: E402

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.types import Sample

LearnerClass = Learner.__ray_actor_class__  # the actor's own class, run in this process


@pytest.mark.parametrize("fused_head", [True, False])
def test_shared_prompt_logprobs_equal_a_full_forward(tiny_model, fused_head):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)
    learner.fused_head = fused_head
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    got = learner.logprobs(batch)
    assert_equals_full_forward(got, tiny_model)


def test_updates_follow_the_advantage_and_report_mismatch(tiny_model):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=3e-3), loss=LossConfig(), threads=2,
                           epochs=2, minibatches=2, micro_batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    true = [[tuple(full_forward_logprobs(model, p, c).tolist()) for c in cs] for p, cs in zip(PROMPTS, COMPLETIONS)]
    groups = groups_of(PROMPTS, COMPLETIONS, logprobs=true)
    advantages = [[1.0 if j == 0 else -1.0 for j in range(len(g))] for g in groups]
    batch = make_train_batch(groups, advantages)
    before = learner.logprobs(batch)
    batch = dataclasses.replace(batch, ref_logprobs_B_Lc=before)  # pi_ref: the policy before the step
    metrics = learner.train_step(batch)
    after = learner.logprobs(batch)
    assert metrics["logprob_diff/max"] < 1e-5  # the "sampler" log-probs were the model's own
    mask = batch.completion_mask_B_Lc
    change = ((after - before) * mask).sum(1)
    up = batch.advantages_B_Lc[:, 0] > 0
    assert (change[up] > 0).all() and (change[~up] < 0).all()
    assert metrics["kl"] > 0 and metrics["grad_norm"] > 0
    # later minibatches are off-policy after the first steps: the clipped loss (rlvr/algorithms/losses.py) clips some
    assert metrics["clip_frac/high"] + metrics["clip_frac/low"] > 0, metrics


def test_sft_learns_the_answers(tiny_model):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)
    samples = [Sample(id=str(i), prompt=f"{i} + 1 =", answer=str(i + 1)) for i in range(8)]
    learner.start_sft(samples, batch_size=8, prompt_template="{prompt}", system_prompt="",
                      response_template="{answer}", optim=OptimSpec(lr=3e-3), seed=0)
    first = learner.sft_steps(1)["sft/loss"]
    last = learner.sft_steps(60)["sft/loss"]
    assert last < first / 4


def _batch_with_own_logprobs(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    true = [[tuple(full_forward_logprobs(model, p, c).tolist()) for c in cs] for p, cs in zip(PROMPTS, COMPLETIONS)]
    groups = groups_of(PROMPTS, COMPLETIONS, logprobs=true)
    return make_train_batch(groups, [[1.0 if j == 0 else -1.0 for j in range(len(g))] for g in groups])


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_loss_metric_is_the_minibatch_loss_whatever_the_micro_batches(tiny_model, aggregation):
    """Defect: micro-batch losses (each a share of the minibatch total) were averaged, reading ~1/k."""
    batch = _batch_with_own_logprobs(tiny_model)
    losses = []
    for micro in (64, 1):
        learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(aggregation=aggregation),
                               threads=2, micro_batch_size=micro)
        losses.append(learner.train_step(batch)["loss"])
    # on-policy, ratio 1: the loss is -mean advantage over tokens (token-mean) or sequences
    mask = batch.completion_mask_B_Lc
    adv = batch.advantages_B_Lc
    expected = -(adv * mask).sum() / mask.sum() if aggregation == "token-mean" else -adv[:, 0].mean()
    assert losses[0] == pytest.approx(float(expected), abs=1e-5)
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)


def test_every_minibatch_steps_and_each_epoch_reshuffles(tiny_model):
    """Defect: minibatches were validated by rollouts but split by prompts; the order was reused per epoch."""
    batch = _batch_with_own_logprobs(tiny_model)  # 3 prompts
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2, epochs=3, minibatches=3)
    learner.set_reference()
    orders, steps = [], []
    original_split, original_step = torch.Tensor.tensor_split, learner.updater.step
    torch.Tensor.tensor_split = lambda self, n: (orders.append(self.tolist()), original_split(self, n))[1]
    learner.updater.step = lambda: (steps.append(1), original_step())[1]
    try:
        learner.train_step(batch)
    finally:
        torch.Tensor.tensor_split = original_split
    assert len(steps) == 9  # 3 epochs x 3 minibatches, one prompt each
    assert len(orders) == 3 and len({tuple(o) for o in orders}) > 1


def test_forwards_run_without_dropout(tmp_path, tiny_model):
    """Defect: log-probs were computed in train mode with dropout on; pi_old and pi then differ by noise."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.attention_dropout = 0.5
    model.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((__import__("pathlib").Path(tiny_model) / f).read_bytes())
    learner = LearnerClass(str(tmp_path), optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    learner.model.train()
    with torch.no_grad():
        first, second = learner._logprobs(learner.model, batch)[0], learner._logprobs(learner.model, batch)[0]
    assert torch.equal(first, second)
    assert learner.model.training  # dropout is zeroed, not switched off by eval()


def test_scaled_heads_fall_back_to_the_logits_path(tmp_path):
    """Defect: heads that scale their logits (Cohere's logit_scale) passed the fused-head check."""
    from transformers import CohereConfig, CohereForCausalLM

    from rlvr.learner.policy_model import fused_head_matches

    config = CohereConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=1, num_key_value_heads=1, logit_scale=0.25)
    model = CohereForCausalLM(config)
    assert not fused_head_matches(model, torch.device("cpu"))
    config.logit_scale = 1.0
    assert fused_head_matches(CohereForCausalLM(config), torch.device("cpu"))


def test_kl_in_the_reward_leaves_the_loss_and_is_served_per_token(tiny_model):
    from rlvr.algorithms.estimate import KLPenalty
    from rlvr.learner.teacher import Teacher

    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(kl_coef=0.1, kl_in="reward",
                           kl_estimator="k1"), threads=2)
    reference = Teacher.__ray_actor_class__(tiny_model, threads=2)  # pi_ref's actor, run in this process
    penalty = KLPenalty(learner, reference, coef=0.1, estimator="k1")
    batch = _batch_with_own_logprobs(tiny_model)
    assert penalty(batch).abs().max() < 1e-5  # pi == pi_ref
    metrics = learner.train_step(batch)
    assert "loss/kl" not in metrics and "kl" not in metrics  # the KL is the reward's, not the loss's
    kl = penalty(batch)
    assert kl[batch.completion_mask_B_Lc].abs().sum() > 0 and (kl[~batch.completion_mask_B_Lc] == 0).all()


def test_group_split_by_a_token_budget_gives_the_same_update(tiny_model):
    """A group larger than learner.max_tokens_per_micro_batch is split (its prompt runs once per part):
    same loss, same gradient, same weights after the step as one pass over the whole group."""
    batch = _batch_with_own_logprobs(tiny_model)
    results = []
    for budget in (0, 12):
        learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2,
                               max_tokens_per_micro_batch=budget)
        metrics = learner.train_step(batch)
        results.append((metrics, torch.cat([p.detach().flatten() for p in learner.model.parameters()])))
    (whole, w0), (split, w1) = results
    assert split["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-5)
    # Adam's first step moves every weight by ~lr whatever its gradient's size: rounding differences
    # in near-zero gradients show up as single large moves, so the mean is compared
    assert (w0 - w1).abs().mean() < 1e-6
    from rlvr.learner.micro_batches import micro_batches

    chunks = micro_batches(batch, torch.arange(batch.num_prompts), max_sequences=64, max_tokens=12)
    assert len(chunks) > batch.num_prompts  # some group really was split


def test_activation_checkpointing_recomputes_and_matches(tiny_model):
    """Checkpointed layers (the shared-prompt cache kept) give the same log-probs and update, and their
    forwards really run again in the backward."""
    batch = _batch_with_own_logprobs(tiny_model)
    results = []
    for checkpointing in (False, True):
        learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2,
                               activation_checkpointing=checkpointing)
        calls = []
        layer = next(m for m in learner.model.modules() if type(m).__name__.endswith("DecoderLayer"))
        layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # the replay calls layer.forward, not the hooks
        metrics = learner.train_step(batch)
        results.append((metrics, torch.cat([p.detach().flatten() for p in learner.model.parameters()]), len(calls)))
    (plain, w0, n0), (ckpt, w1, n1) = results
    assert n1 > n0  # the backward replayed the layer
    assert ckpt["loss"] == pytest.approx(plain["loss"], abs=1e-6)
    assert (w0 - w1).abs().mean() < 1e-6


def test_triton_loss_kernel_makes_the_torch_tables_update(tiny_model, monkeypatch):
    """loss.kernel = "triton" runs the fused kernel (in the interpreter here) on the learner's path, with the
    torch table's metrics and update; "torch" never launches it."""
    from rlvr.kernels import fused_loss

    launches = []
    launch = fused_loss._launch
    monkeypatch.setattr(fused_loss, "_launch", lambda *a, **k: launches.append(1) or launch(*a, **k))
    batch = _batch_with_own_logprobs(tiny_model)
    out = {}
    for kernel in ("torch", "triton"):
        cfg = LossConfig(kernel=kernel, kl_coef=0.05, clip_high=0.28, aggregation="seq-mean-token-mean")
        learner = LearnerClass(tiny_model, optim=OptimSpec(lr=3e-3), loss=cfg, threads=2, epochs=2, micro_batch_size=2,
                               mismatch="tis", entropy=None)
        before = learner.logprobs(batch)
        metrics = learner.train_step(dataclasses.replace(batch, ref_logprobs_B_Lc=before))
        out[kernel] = metrics, learner.logprobs(batch)
        assert bool(launches) == (kernel == "triton"), kernel
    (m_torch, after_torch), (m_triton, after_triton) = out["torch"], out["triton"]
    for key in ("loss", "loss/pg", "loss/kl", "grad_norm", "kl", "approx_kl", "ratio/mean", "clip_frac/low", "clip_frac/high"):
        assert m_triton[key] == pytest.approx(m_torch[key], rel=1e-5, abs=1e-7), key
    torch.testing.assert_close(after_triton, after_torch, atol=1e-5, rtol=1e-5)
