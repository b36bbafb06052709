"""The learner's forward over a TrainBatch (rlvr/learner/forward.py)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr.algorithms.batch import pack
from rlvr.learner.forward import token_logprobs


def _calls(model: torch.nn.Module, batch) -> tuple[dict[str, int], torch.Tensor]:
    counts: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
             for name, m in model.named_modules()]
    try:
        logprobs, _ = token_logprobs(model, batch, temperature=1.0, fused_head=False, compute_dtype=torch.float32,
                                     device=torch.device("cpu"))
    finally:
        for h in hooks:
            h.remove()
    return counts, logprobs


@pytest.mark.parametrize("lengths", [(1,), (1, 1), (2,), (4, 1)])
def test_every_micro_batch_calls_each_module_as_often(tiny_model, lengths):
    """ZeRO-3 gathers a module's parameters across the ranks at each call: a rank whose micro-batch holds only
    one-token completions must call the modules as often as one with longer completions, or the ranks'
    collectives fall out of step and the group hangs (the two-rank ZeRO-3 test did)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    completions = [tuple(range(30, 30 + n)) for n in lengths]
    batch = pack([(257, 20, 258)], completions, [0] * len(lengths), [(0.0,) * n for n in lengths], [1.0] * len(lengths))
    reference = pack([(257, 20, 258)], [(30, 31, 32)], [0], [(0.0,) * 3], [1.0])
    counts, logprobs = _calls(model, batch)
    assert counts == _calls(model, reference)[0]
    with torch.no_grad():  # and the log-probs are still the full forward's
        for b, completion in enumerate(completions):
            ids = torch.tensor([[257, 20, 258, *completion]])
            full = torch.log_softmax(model(ids).logits[0, 2:-1].float(), -1)[torch.arange(len(completion)), list(completion)]
            assert torch.allclose(logprobs[b, : len(completion)], full, atol=1e-5)
