"""Small prompt/completion groups shared by the learner, critic and teacher tests."""

import torch

from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


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


def assert_equals_full_forward(got, model_path):
    """`got` [B, Lc] (rows in PROMPTS x COMPLETIONS order) equals a plain full forward of each sequence."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    row = 0
    for prompt, completions in zip(PROMPTS, COMPLETIONS):
        for completion in completions:
            expected = full_forward_logprobs(model, prompt, completion).float()
            assert torch.allclose(got[row, : len(completion)], expected, atol=2e-5), (row, got[row], expected)
            assert (got[row, len(completion):] == 0).all()
            row += 1
