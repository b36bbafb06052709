"""The typed data that crosses stage (and process) boundaries.

Plain frozen dataclasses of stdlib types, so they pickle across Ray actors and process pools.
Naming: P prompts per step, G completions per prompt (a group), T tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]
TermStatus = Literal["ok", "timeout", "error", "crash"]


@dataclass(frozen=True)
class Sample:
    """One prompt with its ground truth, as every data source yields it."""

    id: str
    prompt: str  # the user message; the rollout worker applies the chat template
    answer: str  # ground truth handed to verifiers
    metadata: Mapping[str, Any] = field(default_factory=dict)  # task-specific, e.g. reasoning-gym's entry


@dataclass(frozen=True)
class Rollout:
    """One sampled completion of a sample."""

    sample: Sample
    completion: str
    finish_reason: FinishReason
    completion_ids: tuple[int, ...]
    sampler_logprobs: tuple[float, ...]  # log-probs of completion_ids under the sampler, same length
    prompt_ids: tuple[int, ...]
    policy_version: int  # the weights (RL steps taken) that produced its first token
    # A partial rollout (rollout.update_mode = "partial") took a weight update mid-way: the version of its last
    # tokens. None: every token came from policy_version.
    last_policy_version: int | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass(frozen=True)
class TermResult:
    """The outcome of one reward term on one rollout.

    `value` is NaN when the call raised or crashed ("error", "crash"): a failed verifier never turns
    into a silent 0. A call that hit the deadline ("timeout") scores `reward.timeout_value` (default
    0.0, as verl and TRL do, so a completion that hangs its verifier keeps a negative advantage; NaN
    voids it instead); either way it is counted in `reward/<term>/timeouts` and printed on the console.
    """

    value: float
    status: TermStatus = "ok"
    error: str = ""  # first line of the exception or the reason for a timeout/crash
    seconds: float = 0.0  # wall time of the call in its worker process


@dataclass(frozen=True)
class ScoredRollout:
    """A rollout with its reward: the weighted sum of its terms after group shaping.

    `reward` is NaN when any weighted term raised or crashed (or timed out with a NaN
    `reward.timeout_value`); such rollouts are masked out of the update and counted in the metrics
    instead of being scored 0.
    """

    rollout: Rollout
    reward: float
    terms: Mapping[str, TermResult]

    @property
    def ok(self) -> bool:
        return not math.isnan(self.reward)


@dataclass(frozen=True, eq=False)
class Unknown:
    """A rollout field its source did not provide (a `rlvr verify` row without token ids or finish reason).

    Reading it raises instead of reading as 0 tokens or "stop": a length reward scored on a made-up 0
    gives a 2,500-character completion full marks. Stands in for `completion_ids` (so `num_tokens`
    raises) or for `finish_reason` (so comparing it raises).
    """

    field: str
    hint: str

    def _fail(self, *args: object) -> Any:
        raise LookupError(f"{self.field} is unknown: {self.hint}")

    __len__ = __iter__ = __getitem__ = __bool__ = __eq__ = __ne__ = __contains__ = _fail
    __hash__ = None  # type: ignore[assignment]
