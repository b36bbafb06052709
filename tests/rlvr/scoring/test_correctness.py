"""One owner of correctness: which term, and what counts as correct."""

import math

import pytest

from rlvr.config import RewardTermConfig
from rlvr.scoring.correctness import Correctness, correctness_label
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


def scored(value: float, status: str = "ok", length: float = 0.0) -> ScoredRollout:
    rollout = Rollout(Sample("s", "q", "5"), "", "stop", (1,), (-1.0,), (2,), 0)
    reward = math.nan if status != "ok" else value + length
    return ScoredRollout(rollout, reward, {"math": TermResult(value, status), "len": TermResult(length)})


def test_label_is_the_configured_term_else_the_first_per_rollout_term():
    # A group shaper listed first cannot be correctness: it receives it.
    terms = [RewardTermConfig("kimi_length"), RewardTermConfig("math", label="verifier"), RewardTermConfig("exact")]
    assert correctness_label(terms) == "verifier"
    assert correctness_label(terms, "exact") == "exact"
    with pytest.raises(ValueError, match="no per-rollout reward term"):
        correctness_label([RewardTermConfig("kimi_length")])


def test_correct_means_full_credit_on_the_correctness_term():
    judge = Correctness("math")
    assert judge.is_correct(scored(1.0)) and not judge.is_correct(scored(0.9))
    assert not judge.is_correct(scored(math.nan, "timeout"))
    assert judge.pass_rate([scored(1.0), scored(0.0), scored(math.nan, "error"), scored(1.0)]) == pytest.approx(2 / 3)
    assert math.isnan(judge.pass_rate([scored(math.nan, "crash")]))


def test_informative_counts_correct_answers_not_reward_spread():
    judge = Correctness("math")
    # All correct, rewards differ only by a length term: no correctness signal (DAPO's 0 < #correct < G).
    assert not judge.informative([scored(1.0, length=-0.1), scored(1.0, length=0.2)])
    assert judge.informative([scored(1.0), scored(0.0)])
    assert not judge.informative([scored(1.0), scored(math.nan, "error")])  # one rollout with a reward
