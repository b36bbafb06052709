"""The sampling stage of a step: prompts -> scored groups, streamed, optionally with dynamic sampling.

    draw = functools.partial(generate_and_score, workers, reward_service)
    sampler = OnePass(draw, judge)            # or DynamicSampling(draw, judge, batch_size=16, max_rounds=4)
    step = sampler.sample(prompts, spec)      # step.train_PG feeds the update, step.all_PG the metrics

`judge` (rlvr/scoring/correctness.py) says which groups are informative: 0 < #correct < G.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import ray

from rlvr.data.sources import PromptSource
from rlvr.rollout.worker import SamplingSpec
from rlvr.runtime.remote import CallTimeout, wait_all
from rlvr.scoring.correctness import Correctness
from rlvr.types import Sample, ScoredRollout


@dataclass(frozen=True)
class StageTimes:
    generate_s: float  # first request to last group out of the engines
    reward_s: float  # last group out to last score in (scoring overlaps generation before that)


@dataclass(frozen=True)
class StepSample:
    train_PG: list[list[ScoredRollout]]  # the groups the update uses
    all_PG: list[list[ScoredRollout]]  # every group generated this step, for the metrics
    times: StageTimes
    rounds: int
    informative_groups: int  # groups of all_PG with 0 < #correct < G
    topped_up_groups: int = 0  # uninformative groups in train_PG (dynamic sampling found too few)
    curriculum: Mapping[str, float] = field(default_factory=dict)  # the pass-rate tracker's metrics after these groups
    wait_s: float = 0.0  # how long the loop waited for them (rlvr/rollout/source.py)
    extra: Mapping[str, float] = field(default_factory=dict)  # the source's own metrics (staleness, dropped groups)

    def metrics(self) -> dict[str, float]:
        return {
            "sampling/rounds": float(self.rounds),
            "sampling/informative_groups": float(self.informative_groups),
            "sampling/topped_up_groups": float(self.topped_up_groups),
        }


def generate_and_score(
    workers,
    reward_service,
    samples_P: list[Sample],
    spec: SamplingSpec,
    *,
    pass_rates: Mapping[str, float] | None = None,
    update_state: bool = True,
    timeout_s: float = 1800.0,
    group_timeout_s: float = 0.0,
):
    """Sample G completions per prompt on every engine; each group goes to scoring the moment it is done
    (with the other groups its engine step finished), while generation continues.

    `pass_rates` (the driver's tracker, rlvr/data/curriculum.py) travels with the scoring calls for the
    shapers that read difficulty; `update_state=False` (held-out evaluation) leaves every shaper's
    state as it was. Returns the scored groups in the order of `samples_P`, and the stage times. The
    draw (generation and scoring) has `timeout_s` (cluster.call_timeout_s): past it, an error naming the
    engines that had not finished, or the scoring calls still out. `group_timeout_s` > 0 (the asynchronous
    engine, rlvr/rollout/async_worker.py): a group unfinished that long after its request is dropped by its
    engine, and missing from the result.
    """
    rates = ray.put({s.id: pass_rates[s.id] for s in samples_P if s.id in pass_rates} if pass_rates else {})
    start = time.perf_counter()
    shards = [samples_P[i :: len(workers)] for i in range(len(workers))]
    deadline_kw = {"group_timeout_s": group_timeout_s} if group_timeout_s else {}
    streams = [w.generate.options(num_returns="streaming").remote(s, spec, **deadline_kw)
               for w, s in zip(workers, shards) if s]
    engine_of = {id(stream): i for i, stream in enumerate(streams)}  # shards are non-empty for the first engines
    deadline = start + timeout_s
    pending = []
    while streams:
        ready, _ = ray.wait(streams, num_returns=1, timeout=max(0.0, deadline - time.perf_counter()))
        if not ready:
            late = ", ".join(f"rollout engine {engine_of[id(s)]}" for s in streams)
            raise CallTimeout(f"{late}: generate did not finish within {timeout_s:.0f} s (cluster.call_timeout_s)")
        try:
            groups_ref = next(ready[0])
        except StopIteration:
            streams.remove(ready[0])
            continue
        pending.append(reward_service.score_groups.remote(groups_ref, rates, update_state))
    generated = time.perf_counter()
    scored = [group for groups in wait_all(pending, roles=["reward service"] * len(pending), call="score_groups",
                                           timeout_s=max(1.0, deadline - generated)) for group in groups]
    done = time.perf_counter()
    position = {s.id: i for i, s in enumerate(samples_P)}
    if group_timeout_s:  # groups may be missing; an engine that finished none of them is stuck, not slow
        back = {group[0].rollout.sample.id for group in scored}
        for i, shard in enumerate(shards):
            if shard and not back & {s.id for s in shard}:
                raise CallTimeout(f"rollout engine {i}: generate did not finish any of its {len(shard)} groups within "
                                  f"rollout.group_timeout_s ({group_timeout_s:g} s)")
    scored.sort(key=lambda group: position[group[0].rollout.sample.id])
    return scored, StageTimes(generate_s=generated - start, reward_s=done - generated)


Draw = Callable[[list[Sample], SamplingSpec], tuple[list[list[ScoredRollout]], StageTimes]]


class Sampler(Protocol):
    def sample(self, prompts: PromptSource, spec: SamplingSpec) -> StepSample: ...


class OnePass:
    """One batch of prompts, every group trained on."""

    def __init__(self, draw: Draw, judge: Correctness) -> None:
        self.draw, self.judge = draw, judge

    def sample(self, prompts: PromptSource, spec: SamplingSpec) -> StepSample:
        scored, times = self.draw(next(prompts), spec)
        return StepSample(scored, scored, times, rounds=1, informative_groups=sum(map(self.judge.informative, scored)))


class DynamicSampling:
    """DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, Sec. 3.2 and Eq. 11).

    A group whose answers are all correct or all wrong carries no correctness signal, so groups are
    drawn batch after batch until `batch_size` of them are informative (0 < #correct < G, as in the
    paper), or `max_rounds` batches were drawn; then the update uses the informative groups found,
    topped up with uninformative ones only if too few were found (`topped_up_groups` counts them).

    The filter reads the correctness term, not the total reward: an all-correct group whose rewards
    differ only by a length term would pass a reward-spread filter, and group-std normalisation
    would blow those tiny differences up to advantages of about +-1.
    """

    def __init__(self, draw: Draw, judge: Correctness, batch_size: int, max_rounds: int) -> None:
        self.draw, self.judge, self.batch_size, self.max_rounds = draw, judge, batch_size, max_rounds

    def sample(self, prompts: PromptSource, spec: SamplingSpec) -> StepSample:
        informative, flat, drawn = [], [], []
        generate_s = reward_s = 0.0
        # Round r of the step seeded s samples with seed s * B + r, r in 1..max_rounds: distinct over steps and
        # rounds as long as B >= max_rounds (B = 31 before max_rounds could reach 32, kept for the same draws).
        stride = max(31, self.max_rounds)
        for round_ in range(1, self.max_rounds + 1):
            seeded = SamplingSpec(spec.n, spec.max_tokens, spec.temperature, spec.top_p, seed=spec.seed * stride + round_)
            scored, times = self.draw(next(prompts), seeded)
            generate_s, reward_s = generate_s + times.generate_s, reward_s + times.reward_s
            drawn += scored
            for group in scored:
                (informative if self.judge.informative(group) else flat).append(group)
            if len(informative) >= self.batch_size:
                break
        train = (informative + flat)[: self.batch_size]
        topped_up = max(0, len(train) - len(informative))
        return StepSample(train, drawn, StageTimes(generate_s, reward_s), round_, len(informative), topped_up)
