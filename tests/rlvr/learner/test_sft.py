"""Cold-start SFT (rlvr/learner/sft.py): its typed API, seeded batches, and the group's typed methods."""

import inspect

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.learner.actor import Learner
from rlvr.learner.forward import token_logprobs
from rlvr.learner.group import LearnerGroup
from rlvr.learner.optim import OptimSpec
from rlvr.learner.sft import ColdStart
from rlvr.types import Sample

SAMPLES = [Sample(id=str(i), prompt=f"{i} + 1 =", answer=str(i + 1)) for i in range(8)]
SETTINGS = dict(batch_size=4, prompt_template="{prompt}", system_prompt="", response_template=" {answer}",
                optim=OptimSpec(lr=3e-3), seed=5)


def _cold_start(tiny_model) -> ColdStart:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    def logprobs(batch):
        return token_logprobs(model, batch, temperature=1.0, fused_head=False, compute_dtype=torch.float32,
                              device=torch.device("cpu"))[0]

    return ColdStart(model, tokenizer, logprobs, SAMPLES, **SETTINGS)


def test_cold_start_tokenises_once_and_is_seeded(tiny_model):
    a, b = _cold_start(tiny_model), _cold_start(tiny_model)
    assert len(a) == len(SAMPLES)
    eos = AutoTokenizer.from_pretrained(tiny_model).eos_token_id
    assert all(answer[-1] == eos for _, answer in a.pairs)  # every answer ends the sequence
    first = a.steps(3)
    assert set(first) == {"sft/loss", "sft/token_acc_p50", "sft/lr"}
    assert b.steps(3) == first  # same seed, same batches, same numbers
    assert a.steps(20)["sft/loss"] < first["sft/loss"]


def test_the_group_calls_sft_through_the_actors_typed_methods():
    """No method names as strings: the group's SFT methods are the actor's, argument for argument."""
    def params(fn):  # Ray adds a tracing parameter to actor methods
        return [p for p in inspect.signature(fn).parameters.values() if p.name != "_ray_trace_ctx"]

    actor = Learner.__ray_actor_class__
    for name in ("start_sft", "sft_steps"):
        assert params(getattr(LearnerGroup, name)) == params(getattr(actor, name)), name
    assert not hasattr(LearnerGroup, "sft")


def test_sft_steps_before_start_sft_is_an_error(tiny_model):
    from rlvr.config import LossConfig

    learner = Learner.__ray_actor_class__(tiny_model, optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)
    with pytest.raises(RuntimeError, match="start_sft"):
        learner.sft_steps(1)
