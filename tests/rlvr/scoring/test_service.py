"""Scorer / RewardService: isolation, deadlines, failure accounting, weighted sums, metrics."""

import asyncio
import math
import time
from pathlib import Path

import pytest

from rlvr.config import RewardConfig, RewardTermConfig
from rlvr.rewards.pool import DeadlinePool
from rlvr.scoring.service import RewardError, Scorer, build_reward_service, reward_metrics
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

HANG = r"so the answer is \boxed{9^{9^{9^{9}}}}"  # sympy tries to evaluate a power tower: never returns


@pytest.fixture(autouse=True)
def plugins_importable(monkeypatch):
    # Spawned workers inherit sys.path, so they can import reward_plugins by its dotted path.
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))


def rollout(completion: str, answer: str = "5", tokens: int = 3, sample_id: str = "s") -> Rollout:
    sample = Sample(id=sample_id, prompt="q", answer=answer)
    return Rollout(sample, completion, "stop", tuple(range(tokens)), (0.0,) * tokens, (1, 2), 0)


def terms(*names: str, **weights: float) -> list[RewardTermConfig]:
    return [RewardTermConfig(n, weight=weights.get(n.rpartition(":")[2], 1.0)) for n in names]


def warm(scorer: Scorer) -> None:
    scorer.score_group([rollout("warm-up")])  # wait for the workers to start; deadlines count from here


def test_weighted_sum_parts_and_metrics():
    with Scorer(terms("reward_plugins:length", "reward_plugins:with_parts", with_parts=0.5), workers=1) as scorer:
        scored = scorer.score_group([rollout("ab"), rollout("abcd")])
    assert [s.reward for s in scored] == [2.5, 4.5]
    assert scored[0].terms["with_parts/style"].value == 0.25
    metrics = reward_metrics([scored])
    assert metrics["reward/mean"] == 3.5 and metrics["reward/std"] == 1.0 and metrics["reward/failed"] == 0
    assert metrics["reward/length/mean"] == 3.0 and metrics["reward/with_parts/style/mean"] == 0.25
    assert metrics["reward/length/timeouts"] == metrics["reward/length/errors"] == metrics["reward/length/crashes"] == 0
    assert "reward/with_parts/style/errors" not in metrics


def test_raising_plugin_is_an_error_never_a_zero():
    with Scorer(terms("reward_plugins:length", "reward_plugins:raises"), workers=1) as scorer:
        scored = scorer.score_group([rollout("x"), rollout("y")])
    for s in scored:
        assert math.isnan(s.reward) and not s.ok
        assert s.terms["raises"].status == "error" and math.isnan(s.terms["raises"].value)
        assert s.terms["raises"].error.startswith("RuntimeError: plugin bug")
        assert s.terms["length"].status == "ok"
    with pytest.raises(RewardError, match="RuntimeError: plugin bug"):
        reward_metrics([scored])


def test_zero_weight_term_failing_does_not_void_the_reward():
    cfg = [RewardTermConfig("reward_plugins:length"), RewardTermConfig("reward_plugins:raises", weight=0.0)]
    with Scorer(cfg, workers=1) as scorer:
        (scored,) = scorer.score_group([rollout("abc")])
    assert scored.reward == 3.0
    assert reward_metrics([[scored]])["reward/raises/errors"] == 1


def test_sympy_hang_times_out_within_deadline_and_service_keeps_serving():
    timeout_s = 1.0
    with Scorer(terms("math"), workers=2, timeout_s=timeout_s) as scorer:
        warm(scorer)
        start = time.monotonic()
        scored = scorer.score_group([rollout(HANG), rollout(r"\boxed{5}"), rollout(r"\boxed{6}")])
        elapsed = time.monotonic() - start
        assert elapsed < timeout_s + 1.0
        assert [s.terms["math"].status for s in scored] == ["timeout", "ok", "ok"]
        assert "deadline" in scored[0].terms["math"].error
        assert [s.reward for s in scored[1:]] == [1.0, 0.0]
        again = scorer.score_group([rollout(r"\boxed{5}")] * 4)  # the killed worker was replaced
        assert [s.reward for s in again] == [1.0] * 4
        assert scorer.stats()["timeouts"] == 1 and scorer.stats()["workers_replaced"] == 1
    metrics = reward_metrics([scored])
    assert metrics["reward/math/timeouts"] == 1
    assert timeout_s <= metrics["reward/math/call_s_max"] < timeout_s + 1.0  # the killed call's time is counted


@pytest.mark.parametrize("timeout_value", [0.0, math.nan])
def test_a_timeout_scores_timeout_value_and_is_counted(timeout_value):
    """0.0 (the training default, as in verl and TRL): a completion that hangs its verifier keeps its
    negative advantage; NaN voids it like a crash. Either way the timeout is counted."""
    cfg = RewardConfig(terms=(RewardTermConfig("reward_plugins:sleeps"),), workers=2, timeout_s=0.5,
                       timeout_value=timeout_value)
    with Scorer.from_config(cfg) as scorer:
        warm(scorer)
        scored = scorer.score_group([rollout("30"), rollout("0")])
    assert [s.terms["sleeps"].status for s in scored] == ["timeout", "ok"]
    assert scored[1].reward == 1.0
    if math.isnan(timeout_value):
        assert math.isnan(scored[0].reward) and not scored[0].ok
    else:
        assert scored[0].reward == 0.0 and scored[0].ok and scored[0].terms["sleeps"].value == 0.0
    metrics = reward_metrics([scored])
    assert metrics["reward/sleeps/timeouts"] == 1 and metrics["reward/failed"] == float(math.isnan(timeout_value))


def test_the_training_default_scores_a_timeout_zero():
    assert RewardConfig().timeout_value == 0.0


def test_each_call_reports_its_time_so_slow_terms_show_in_metrics():
    with Scorer(terms("reward_plugins:sleeps", "reward_plugins:length"), workers=2) as scorer:
        warm_up = scorer.score_group([rollout("0")])
        scored = scorer.score_group([rollout("0.3"), rollout("0.1")])
    assert warm_up[0].terms["sleeps"].seconds < 0.1
    slow, fast = (s.terms["sleeps"].seconds for s in scored)
    assert 0.3 <= slow < 0.4 and 0.1 <= fast < 0.2  # a sleep never ends early; allow a loaded machine's lag
    metrics = reward_metrics([scored])
    assert metrics["reward/sleeps/call_s_max"] == slow
    assert metrics["reward/sleeps/call_s_mean"] == pytest.approx((slow + fast) / 2)
    assert metrics["reward/length/call_s_max"] < 0.05


def test_memory_limit_turns_a_runaway_allocation_into_an_error_and_the_worker_goes_on():
    with Scorer(terms("reward_plugins:allocates"), workers=1, memory_mb=1024) as scorer:
        scored = scorer.score_group([rollout("16"), rollout("4096"), rollout("16")])
        assert [s.terms["allocates"].status for s in scored] == ["ok", "error", "ok"]
        assert scored[1].terms["allocates"].error.startswith("MemoryError")
        assert scorer.stats()["crashes"] == 0 and scorer.stats()["workers_replaced"] == 0


def test_workers_are_recycled_after_their_calls_and_nothing_is_lost():
    with Scorer(terms("reward_plugins:pid"), workers=1, recycle_after=4) as scorer:
        first = {s.reward for s in scorer.score_group([rollout("a")] * 4)}
        second = [s for s in scorer.score_group([rollout("b")] * 3) if s.ok]
        assert len(first) == 1 and len(second) == 3 and {s.reward for s in second}.isdisjoint(first)
        assert scorer.stats()["workers_recycled"] == 1 and scorer.stats()["workers_replaced"] == 0


def test_the_hanging_call_is_the_one_marked_inside_a_chunk():
    with Scorer(terms("math"), workers=1, timeout_s=1.0) as scorer:  # one worker: the group is one chunk
        warm(scorer)
        scored = scorer.score_group([rollout(r"\boxed{5}"), rollout(r"\boxed{6}"), rollout(HANG), rollout("5")])
    assert [s.terms["math"].status for s in scored] == ["ok", "ok", "timeout", "ok"]
    assert [s.reward for s in scored[:2]] + [scored[3].reward] == [1.0, 0.0, 1.0]


def test_plugin_that_kills_its_process_is_counted_and_its_worker_replaced():
    with Scorer(terms("reward_plugins:exits_on_boom"), workers=1) as scorer:
        scored = scorer.score_group([rollout("a"), rollout("boom"), rollout("b")])
        assert [s.terms["exits_on_boom"].status for s in scored] == ["ok", "crash", "ok"]
        assert "exit code 3" in scored[1].terms["exits_on_boom"].error
        assert scorer.stats()["crashes"] == 1 and scorer.stats()["workers_replaced"] == 1
        assert [s.reward for s in scorer.score_group([rollout("c")])] == [1.0]
    assert reward_metrics([scored])["reward/exits_on_boom/crashes"] == 1


def test_async_rewards_and_bad_return_values():
    with Scorer(terms("reward_plugins:async_half", "reward_plugins:returns_none", returns_none=0.0), workers=1) as s:
        (scored,) = s.score_group([rollout("x")])
    assert scored.terms["async_half"].value == 0.5 and scored.reward == 0.5
    assert scored.terms["returns_none"].status == "error" and "returned None" in scored.terms["returns_none"].error


def test_groups_are_scored_concurrently_as_they_arrive():
    async def main(scorer):
        groups = [[rollout("0.3")] * 2 for _ in range(4)]  # 8 calls of 0.3 s on 4 workers: ~0.6 s, not 2.4 s
        start = time.monotonic()
        done = await asyncio.gather(*(scorer.score_group_async(g) for g in groups))
        return done, time.monotonic() - start

    with Scorer(terms("reward_plugins:sleeps"), workers=4) as scorer:
        warm_group = [rollout("0")] * 4
        scorer.score_group(warm_group)
        done, elapsed = asyncio.run(main(scorer))
    assert all(s.reward == 1.0 for g in done for s in g)
    assert elapsed < 1.8


def test_group_shaper_sees_the_correctness_channel():
    cfg = [RewardTermConfig("exact"), RewardTermConfig("kimi_length", weight=0.5)]
    with Scorer(cfg, workers=1) as scorer:
        scored = scorer.score_group([rollout("5", tokens=10), rollout("5", tokens=30), rollout("4", tokens=20)])
    assert [s.terms["kimi_length"].value for s in scored] == [0.5, -0.5, 0.0]
    assert [s.reward for s in scored] == [1.25, 0.75, 0.0]


def test_group_shaper_marks_rollouts_whose_correctness_failed():
    cfg = [RewardTermConfig("reward_plugins:raises"), RewardTermConfig("kimi_length")]
    with Scorer(cfg, workers=1) as scorer:
        scored = scorer.score_group([rollout("5"), rollout("6")])
    assert all(s.terms["kimi_length"].status == "error" and "'raises' failed" in s.terms["kimi_length"].error
               for s in scored)


def test_pass_rates_reach_laser_d_and_update_state_false_leaves_its_windows_alone():
    cfg = [RewardTermConfig("exact"), RewardTermConfig("laser_d", kwargs={"initial_target": 50, "min_lengths": 1})]
    with Scorer(cfg, workers=1) as scorer:
        laser = scorer.terms[1].fn
        # An unseen prompt that is all correct is "easy"; the driver says this one is hard.
        scorer.score_groups([[rollout("5", tokens=20), rollout("5", tokens=30)]], pass_rates={"s": 0.0})
        assert sorted(laser.lengths["hard"]) == [20, 30] and not laser.lengths["easy"]
        before = {b: list(w) for b, w in laser.lengths.items()}
        scored = scorer.score_group([rollout("5", tokens=10), rollout("5", tokens=40)], update_state=False)
        assert {b: list(w) for b, w in laser.lengths.items()} == before
        assert [s.terms["laser_d"].value for s in scored] == [0.5, 0.5]  # easy bucket: initial target 50


def test_config_errors_are_raised_at_construction():
    with pytest.raises(TypeError, match="must pickle"):
        DeadlinePool([lambda r: 1.0], workers=1, timeout_s=1)
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        Scorer([RewardTermConfig("nope")])
    with pytest.raises(ValueError, match="duplicated"):
        Scorer([RewardTermConfig("exact"), RewardTermConfig("exact")])
    with pytest.raises(ValueError, match="correctness term"):
        Scorer([RewardTermConfig("exact"), RewardTermConfig("kimi_length")], correctness="math")


def test_a_step_with_too_many_voided_rollouts_raises_naming_the_term_and_the_share():
    ok, err = TermResult(1.0), TermResult(math.nan, "error", "ValueError: boom")
    late = TermResult(0.0, "timeout", "deadline 10 s")  # timeout_value 0.0: a result, not a void

    def step(errors: int, n: int = 10) -> list[list[ScoredRollout]]:
        return [[ScoredRollout(rollout("x"), math.nan if i < errors else 1.0,
                               {"math": err if i < errors else ok, "fmt": late if i % 2 else ok}) for i in range(n)]]

    assert reward_metrics(step(5), max_failed_frac=0.5)["reward/failed"] == 5  # half is not more than half
    with pytest.raises(RewardError) as info:
        reward_metrics(step(6), max_failed_frac=0.5)
    assert str(info.value) == ("6 of 10 rollouts of the step (60.0%) got no reward (reward.max_failed_frac = 0.5): "
                               "term 'math' error on 6/10 (ValueError: boom)")  # fmt's timeouts voided nothing
    with pytest.raises(RewardError, match=r"1 of 10 rollouts .* = 0\)"):
        reward_metrics(step(1), max_failed_frac=0.0)
    assert reward_metrics(step(9), max_failed_frac=1.0)["reward/failed"] == 9
    with pytest.raises(RewardError, match=r"^10 of 10 rollouts of the step \(100\.0%\)"):
        reward_metrics(step(10), max_failed_frac=1.0)  # no reward at all: always an error


def test_reward_metrics_shapes():
    assert reward_metrics([]) == {}
    with Scorer(terms("exact"), workers=1) as scorer:
        scored = scorer.score_groups([[rollout("5"), rollout("5")], [rollout("5"), rollout("4")]])
    metrics = reward_metrics(scored)
    assert metrics["reward/zero_std_groups"] == 0.5 and metrics["reward/exact/mean"] == 0.75


@pytest.mark.ray
def test_reward_service_scores_groups_over_ray(ray_cluster):  # the session's Ray cluster (tests/conftest.py)
    cfg = RewardConfig(terms=(RewardTermConfig("math"),), workers=2, timeout_s=1.0)
    service = build_reward_service(cfg)
    groups = [[rollout(r"\boxed{5}"), rollout(r"\boxed{4}")] for _ in range(6)] + [[rollout(HANG)]]
    scored = ray_cluster.get([service.score_group.remote(g) for g in groups])
    assert [[s.reward for s in g] for g in scored[:-1]] == [[1.0, 0.0]] * 6
    assert scored[-1][0].terms["math"].status == "timeout"
    assert reward_metrics(scored)["reward/math/timeouts"] == 1
    ray_cluster.get(service.close.remote())
