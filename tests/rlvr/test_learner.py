"""The learner's log-probs (shared-prompt forward, fused head) against a plain full forward, and its updates."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.batch import make_train_batch
from rlvr.kernels import PolicyLossConfig
from rlvr.learner import Learner
from rlvr.optim import OptimSpec
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

LearnerClass = Learner.__ray_actor_class__  # the actor's own class, run in this process


def groups_of(prompts, completions_per_prompt, logprobs=None):
    groups = []
    for i, (prompt, completions) in enumerate(zip(prompts, completions_per_prompt)):
        sample = Sample(id=str(i), prompt="", answer="")
        group = []
        for j, c in enumerate(completions):
            lps = logprobs[i][j] if logprobs else (-1.0,) * len(c)
            group.append(ScoredRollout(Rollout(sample, "", "stop", tuple(c), tuple(lps), tuple(prompt), 0), float(j % 2), {"t": TermResult(float(j % 2))}))
        groups.append(group)
    return groups


PROMPTS = [(257, 20, 21, 22, 258), (257, 30, 258), (257, 40, 41, 42, 43, 44, 45, 258)]
COMPLETIONS = [[(22, 23, 260), (24,)], [(25, 26, 27, 28, 260), (29, 260), (31, 260)], [(33, 260)]]


def full_forward_logprobs(model, prompt, completion):
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("fused_head", [True, False])
def test_shared_prompt_logprobs_equal_a_full_forward(tiny_model, fused_head):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=PolicyLossConfig(), threads=2)
    learner.fused_head = fused_head
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    got = learner.logprobs(batch)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    row = 0
    for prompt, completions in zip(PROMPTS, COMPLETIONS):
        for completion in completions:
            expected = full_forward_logprobs(model, prompt, completion).float()
            assert torch.allclose(got[row, : len(completion)], expected, atol=2e-5), (row, got[row], expected)
            assert (got[row, len(completion):] == 0).all()
            row += 1


def test_updates_follow_the_advantage_and_report_mismatch(tiny_model):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=3e-3), loss=PolicyLossConfig(), threads=2,
                           epochs=2, minibatches=2, micro_batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    true = [[tuple(full_forward_logprobs(model, p, c).tolist()) for c in cs] for p, cs in zip(PROMPTS, COMPLETIONS)]
    groups = groups_of(PROMPTS, COMPLETIONS, logprobs=true)
    advantages = [[1.0 if j == 0 else -1.0 for j in range(len(g))] for g in groups]
    batch = make_train_batch(groups, advantages)
    before = learner.logprobs(batch)
    metrics = learner.train_step(batch)
    after = learner.logprobs(batch)
    assert metrics["logprob_diff/max"] < 1e-5  # the "sampler" log-probs were the model's own
    mask = batch.completion_mask_B_Lc
    change = ((after - before) * mask).sum(1)
    up = batch.advantages_B > 0
    assert (change[up] > 0).all() and (change[~up] < 0).all()
    assert metrics["kl"] > 0 and metrics["grad_norm"] > 0
    # later minibatches are off-policy after the first steps: the clipped loss (kernels/clipped_loss.py) clips some
    assert metrics["clip_frac/high"] + metrics["clip_frac/low"] > 0, metrics


def test_sft_learns_the_answers(tiny_model):
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=1e-3), loss=PolicyLossConfig(), threads=2)
    samples = [Sample(id=str(i), prompt=f"{i} + 1 =", answer=str(i + 1)) for i in range(8)]
    learner.start_sft(samples, batch_size=8, prompt_template="{prompt}", system_prompt="",
                      response_template="{answer}", optim=OptimSpec(lr=3e-3), seed=0)
    first = learner.sft_steps(1)["sft/loss"]
    last = learner.sft_steps(60)["sft/loss"]
    assert last < first / 4
