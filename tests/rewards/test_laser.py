"""LASER-D (laser.py): difficulty buckets from tracked pass rates, coverage targets."""

import math

from rlvr.rewards.laser import LaserD
from rlvr.types import Rollout, Sample

NAN = math.nan


def rollout(tokens: int, finish: str = "stop", prompt: str = "q", metadata=None, sample_id: str = "p") -> Rollout:
    return Rollout(Sample(sample_id, prompt, "5", metadata or {}), "x", finish, (0,) * tokens, (0.0,) * tokens, (), 0)


def group(*tokens: int) -> list[Rollout]:
    return [rollout(n) for n in tokens]


def test_laser_d_targets_follow_difficulty():
    laser = LaserD(initial_target=500, alpha=0.5, min_lengths=4, coverage=0.75)
    # An easy prompt (all correct): 400 is within the initial target, 600 is not.
    assert laser(group(400, 600, 300, 450), [1.0] * 4) == [0.5, 0.0, 0.5, 0.5]
    # Its window now holds [400, 600, 300, 450]: the 75% coverage target is 450.
    assert laser.target("easy") == 450
    assert laser(group(440, 460, 100, 800), [1.0] * 4) == [0.5, 0.0, 0.5, 0.0]
    # A hard prompt (1 of 4 correct) still uses the initial target; wrong answers get 0.
    hard = [rollout(n, sample_id="hard") for n in (480, 100, 100, 100)]
    assert laser(hard, [1.0, 0.0, 0.0, 0.0]) == [0.5, 0.0, 0.0, 0.0]
    assert laser.bucket(laser.pass_rates["hard"]) == "hard"


def test_laser_d_pass_rate_is_tracked_across_steps():
    laser = LaserD(initial_target=500, decay=0.5)
    laser(group(10, 10), [1.0, 1.0])  # pass rate 1
    laser(group(10, 10), [0.0, 0.0])  # EMA: 0.5 * 1 + 0.5 * 0
    assert laser.pass_rates["p"] == 0.5 and laser.bucket(0.5) == "medium"
    assert math.isnan(laser(group(10), [NAN])[0])
