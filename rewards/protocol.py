"""What a reward is: a picklable callable on one rollout, or a group shaper on one group.

    @register("short")
    def short(rollout: Rollout) -> float:
        return 1.0 if rollout.num_tokens < 100 else 0.0

A reward returns a finite real number (`numbers.Real`: a float, an int, a numpy scalar; not a `bool`,
not a string), or a `RewardResult` when it also wants named sub-terms logged
(`reward/<term>/<part>/mean`); only `value` enters the weighted sum. Anything else is scored as an
`error` naming the reward and the type it returned, never converted. An `async def` reward is
allowed (for checkers that call a service): the worker process runs it to completion.

Rewards run in worker processes under a hard wall-clock deadline, so they must pickle: module-level
functions, or frozen dataclasses with `__call__` for parameterised ones (closures do not pickle).
They should be pure: after a worker is killed, calls it had finished but not reported run again.
Rewards see the completion text, its token count, the finish reason and the sample (prompt, answer,
metadata); the worker's copy of the rollout carries no prompt ids or sampler log-probs.

A group shaper (`@register("name", group=True)`) receives a whole group and the correctness channel
(`correct_G`: the values of the correctness term, NaN where it failed) and returns one value per
rollout. Group shapers run in the reward service's own process, after the per-rollout terms, and may
keep state across steps (e.g. LASER-D's length windows), so they need not be frozen. A shaper with
state has `state()` (JSON-friendly) and `restore(state)`, which a resumable checkpoint saves and loads
(rlvr/runtime/resume.py, through the scorer's `shaper_state` / `set_shaper_state`).

A group shaper that reads difficulty or keeps state sets `reads_pass_rate = True` and takes two more
keywords (`PassRateGroupRewardFn`): `pass_rate`, the driver's tracked pass rate of the group's prompt
(None for a prompt not seen before; rlvr/data/curriculum.py owns it, so shapers keep no pass rates of their
own), and `update`, False during held-out evaluation, when the shaper must not change its state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rlvr.types import Rollout

# A rollout is correct when its correctness term's value is at least this: binary verifiers give 1.0, and
# partial credit below it does not count (rlvr/scoring/correctness.py picks the term).
CORRECT_AT = 1.0


def passed(value: float) -> bool:
    """A correctness value counts as correct (NaN, a failed verifier, does not)."""
    return value >= CORRECT_AT


@dataclass(frozen=True)
class RewardResult:
    """A reward value with named sub-terms that are logged but not summed."""

    value: float
    parts: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class RewardFn(Protocol):
    def __call__(self, rollout: Rollout) -> float | RewardResult | Awaitable[float | RewardResult]: ...


@runtime_checkable
class GroupRewardFn(Protocol):
    def __call__(self, rollouts_G: Sequence[Rollout], correct_G: Sequence[float]) -> Sequence[float]: ...


@runtime_checkable
class PassRateGroupRewardFn(Protocol):
    reads_pass_rate: bool

    def __call__(
        self, rollouts_G: Sequence[Rollout], correct_G: Sequence[float], *, pass_rate: float | None, update: bool
    ) -> Sequence[float]: ...
