"""`run_call`: what a reward may return. Strict: a finite real number or a RewardResult, nothing else."""

import math

import numpy as np
import pytest

from rlvr.rewards import RewardResult
from rlvr.rewards.pool import run_call
from rlvr.types import Rollout, Sample

ROLLOUT = Rollout(Sample("s1", "q", "1"), "c", "stop", (), (), (), 0)


class Returns:
    """A reward returning a fixed object (a class, not a closure, as plugins must be)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, rollout):
        return self.value


@pytest.mark.parametrize(("returned", "expected"), [
    (1.0, 1.0), (0, 0.0), (np.float32(0.5), 0.5), (np.int64(2), 2.0), (RewardResult(1, {"style": 0.25}), 1.0),
])
def test_real_numbers_are_scores(returned, expected):
    status, value, _, error, _ = run_call(Returns(returned), ROLLOUT)
    assert (status, value, error) == ("ok", expected, "")


@pytest.mark.parametrize(("returned", "type_name"), [
    ("1.0", "str"), (True, "bool"), (None, "NoneType"), ([1.0], "list"), (np.bool_(True), "bool"),
    (RewardResult("1.0"), "str"), (RewardResult(1.0, {"style": False}), "bool"),
])
def test_anything_else_is_an_error_naming_the_reward_and_the_type(returned, type_name):
    status, value, _, error, _ = run_call(Returns(returned), ROLLOUT)
    assert status == "error" and math.isnan(value)
    assert error.startswith("TypeError: reward Returns returned ") and type_name in error


@pytest.mark.parametrize("returned", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_non_finite_numbers_are_errors(returned):
    status, _, _, error, _ = run_call(Returns(returned), ROLLOUT)
    assert status == "error" and "finite" in error
