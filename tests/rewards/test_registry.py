"""Every built-in reward resolves by name, pickles (per-rollout ones run in worker processes) and scores a rollout."""

import importlib.metadata
import math
import pickle
from pathlib import Path

import pytest

from rlvr.rewards import RewardResult, register, registered, registry, resolve
from rlvr.types import Rollout, Sample

KWARGS = {  # rewards with required constructor arguments
    "overlong": {"max_tokens": 100, "buffer_tokens": 20},
    "cosine_length": {"max_tokens": 100},
    "laser_d": {"initial_target": 50},
    "choice": {"letters": "12345"},  # so that SAMPLE's answer "5" is a valid choice
}
SAMPLE = Sample("s", "What is 2+3? Think for 100 tokens.", "5",
                {"source_dataset": "chain_sum", "target_tokens": 100, "expression": "2 + 3"})


def rollout(completion: str = r"<think>2+3</think> \boxed{5}") -> Rollout:
    return Rollout(SAMPLE, completion, "stop", tuple(range(40)), (0.0,) * 40, (1,), 0)


@pytest.mark.parametrize("name", registered())
def test_builtin_resolves_pickles_and_scores(name):
    fn = resolve(name, KWARGS.get(name))
    if registry.is_group_reward(fn):
        values = fn([rollout(), rollout("4")], [1.0, 0.0])
        assert len(values) == 2 and all(isinstance(v, float) and not math.isnan(v) for v in values)
    else:
        assert isinstance(pickle.loads(pickle.dumps(fn))(rollout()), float)


def test_choice_sample_is_scored_by_choice():
    assert resolve("choice")(Rollout(Sample("s", "q", "B"), "The answer is (B).", "stop", (), (), (), 0)) == 1.0


def test_dotted_path_and_kwargs_binding():
    fn = resolve("rlvr.rewards.length:TruncationPenalty", {"penalty": -0.5})
    assert fn(Rollout(SAMPLE, "x", "length", (), (), (), 0)) == -0.5
    with pytest.raises(TypeError, match="bad kwargs"):
        resolve("overlong", {"max_tokens": 10, "buffer": 2})
    with pytest.raises(KeyError, match="has no attribute"):
        resolve("rlvr.rewards.length:nope")
    with pytest.raises(KeyError, match="cannot import"):
        resolve("no_such_module:fn")


@register("test_registry_short")
def short(rollout: Rollout) -> RewardResult:
    return RewardResult(float(rollout.num_tokens < 100), {"tokens": float(rollout.num_tokens)})


def test_decorator_registration_and_duplicates():
    assert "test_registry_short" in registered()
    assert resolve("test_registry_short")(rollout()).parts == {"tokens": 40.0}
    with pytest.raises(ValueError, match="already registered"):
        register("test_registry_short")(lambda r: 0.0)


def test_entry_point_plugins(monkeypatch):
    ep = importlib.metadata.EntryPoint("my_plugin", "rlvr.rewards.length:TruncationPenalty", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert resolve("my_plugin")(rollout()) == 0.0
    with pytest.raises(KeyError, match="unknown reward 'other'"):
        resolve("other")


def test_the_example_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    concise = resolve("custom_reward:concise", {"budget": 20})  # the name the module registers
    result = pickle.loads(pickle.dumps(concise))(rollout())  # 40 tokens, boxed: 1 - (40 - 20) / 20
    assert result.value == 0.0 and result.parts == {"boxed": 1.0, "over_budget": 1.0}
