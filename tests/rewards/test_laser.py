"""LASER-D (laser.py): difficulty buckets from tracked pass rates, coverage targets."""

import collections
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
    assert laser.lengths["hard"] == collections.deque([480]) and laser.bucket(0.25) == "hard"
    assert math.isnan(laser(group(10), [NAN])[0])


def test_laser_d_buckets_by_the_drivers_pass_rate_when_it_has_one():
    """The driver's tracker (rlvr/data/curriculum.py) owns pass rates; the shaper keeps none of its own."""
    laser = LaserD(initial_target=500, min_lengths=1, coverage=1.0)
    laser(group(100), [1.0], pass_rate=0.1)  # all correct now, but tracked as hard: the hard window learns
    assert list(laser.lengths["hard"]) == [100] and not laser.lengths["easy"]
    assert laser(group(200, 50), [1.0, 1.0], pass_rate=0.2) == [0.0, 0.5]  # hard target is 100 now
    assert not hasattr(laser, "pass_rates") and LaserD.reads_pass_rate


def test_laser_d_does_not_learn_when_told_not_to_update():
    laser = LaserD(initial_target=500, min_lengths=1)
    assert laser(group(300, 700), [1.0, 1.0], update=False) == [0.5, 0.0]
    assert all(not window for window in laser.lengths.values())
