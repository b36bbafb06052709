"""Every built-in reward resolves by name, pickles (per-rollout ones run in worker processes) and scores a rollout."""

import importlib.metadata
import math
import multiprocessing.forkserver
import pickle
import sys
from pathlib import Path

import pytest

from rlvr.rewards import RewardResult, register, registered, registry, resolve
from rlvr.rewards.pool import DeadlinePool
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


def test_a_reward_module_in_the_working_directory_needs_no_pythonpath(tmp_path, monkeypatch):
    """Issue 20: the `rlvr` console script puts its bin/ folder on sys.path, not the working directory, so
    `my_rewards:short` needed PYTHONPATH=. ; the pool's processes (forked by a server started earlier, with
    the sys.path of then) must find the module too."""
    multiprocessing.forkserver.ensure_running()  # as in a long-lived process: started before the module was found
    (tmp_path / "cwd_rewards_for_test.py").write_text("def short(rollout):\n    return float(rollout.num_tokens < 100)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        fn = resolve("cwd_rewards_for_test:short")
        assert fn(rollout()) == 1.0 and sys.path[-1] == str(tmp_path)  # appended: it shadows no installed package
        pool = DeadlinePool([fn], workers=1, timeout_s=60)
        try:
            assert pool.submit([(0, rollout())]).result(timeout=120)[0][:2] == ("ok", 1.0)
        finally:
            pool.close()
    finally:
        sys.modules.pop("cwd_rewards_for_test", None)
    with pytest.raises(KeyError, match=rf"cannot import 'nowhere_rewards'.* working directory {tmp_path}; set "
                                       "PYTHONPATH to the folder that holds it"):
        resolve("nowhere_rewards:f")
    (tmp_path / "needs_a_missing_dependency.py").write_text("import no_such_dependency\n")
    with pytest.raises(KeyError, match=r"No module named 'no_such_dependency'\)?$"):  # no PYTHONPATH hint: found
        resolve("needs_a_missing_dependency:f")
