"""Misbehaving reward plugins for tests/rlvr/test_scoring.py (a plain module, so worker processes import it)."""

import asyncio
import os
import time

from rlvr.rewards import RewardResult


def length(rollout) -> float:
    return float(len(rollout.completion))


def raises(rollout) -> float:
    raise RuntimeError(f"plugin bug on {rollout.completion!r}")


def exits_on_boom(rollout) -> float:
    if rollout.completion == "boom":
        os._exit(3)  # as a segfault or the OOM killer would: no exception, no cleanup
    return 1.0


def sleeps(rollout) -> float:
    time.sleep(float(rollout.completion))
    return 1.0


async def async_half(rollout) -> float:
    await asyncio.sleep(0.01)
    return 0.5


def with_parts(rollout) -> RewardResult:
    return RewardResult(1.0, {"style": 0.25})


def returns_none(rollout):
    return None


def allocates(rollout) -> float:
    return float(len(bytearray(int(rollout.completion) * 2**20)) > 0)  # completion: MiB to allocate


def pid(rollout) -> float:
    return float(os.getpid())  # which worker process scored the call


def boom(rollout) -> float:
    raise ValueError("boom")


def boom_unless_flagged(rollout) -> float:
    """Raises except on the samples whose row says `verifiable`: a reward that fails on most rollouts, not all."""
    if rollout.sample.metadata.get("verifiable"):
        return 1.0
    raise ValueError("boom")


def returns_text(rollout):
    return "1.0"  # a common plugin bug: must be an error, not silently 1.0


class NeedsThreshold:
    """A parameterised reward with a required argument (for the wrong-kwargs check)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, rollout) -> float:
        return float(len(rollout.completion) > self.threshold)


def under_200_tokens(rollout) -> float:
    return 1.0 if rollout.num_tokens < 200 else 0.0  # the README's example reward


def odd_length(rollout) -> float:
    """1.0 for a completion of odd length: a random model gets a mix of right and wrong (rlvr eval tests)."""
    return float(len(rollout.completion) % 2)
