"""Where each step's rollouts come from: the loop asks the source, and the source owns the sampling.

    source = build_source(cfg, workers, reward_service, prompts, tracker, judge, stop)  # chosen when the run is built
    sampled = source.next_batch(step)      # the scored groups to train on at `step` (a StepSample)
    with source.paused():                  # between steps: no generation in flight (evaluation)
        ...
    source.close()

`SyncSource` (train.max_staleness = 0): sample with the weights of the step before, then return; the on-policy
loop. `AsyncSource` (train.max_staleness = k > 0): a producer thread keeps the engines generating the next
batches while the learner trains; batch t starts only once the weights of step t - k - 1's update are
pushed, so no rollout trains more than k versions after the weights that began it (the bound of one-step-off
and k-step-off training: NeMo-RL's async GRPO, prime-rl's `max_async_level`, AReaL's eta, arXiv 2505.24298
Sec. 5.1). Both own the step's `SamplingSpec` (seeds, P, G), dynamic sampling, the curriculum's draw and the
pass-rate tracker's update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import statistics
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from concurrent.futures import Future
from typing import Any, Protocol

from rlvr.config import Config
from rlvr.data.sources import PromptSource
from rlvr.rollout.sampling import DynamicSampling, OnePass, Sampler, StepSample, generate_and_score
from rlvr.rollout.worker import SamplingSpec
from rlvr.runtime.remote import CallTimeout
from rlvr.scoring.correctness import Correctness
from rlvr.types import Sample, ScoredRollout


def step_spec(cfg: Config, step: int) -> SamplingSpec:
    """The sampling of RL step `step`: G completions per prompt, seeded by the step (reproducible, resumable)."""
    r = cfg.rollout
    return SamplingSpec(cfg.algo.group_size, r.max_tokens, r.temperature, r.top_p, seed=r.seed * 100_003 + step)


class RolloutSource(Protocol):
    def next_batch(self, step: int) -> StepSample: ...

    def paused(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...

    @property
    def prompts(self) -> PromptSource: ...  # a checkpoint's prompt position: that of the first untrained batch

    @property
    def tracker(self) -> Any: ...  # a checkpoint's pass rates: those of the trained batches


class SyncSource:
    """On-policy: each step's groups are drawn and scored with the current weights, then trained on."""

    def __init__(self, sampler: Sampler, prompts: PromptSource, tracker, cfg: Config) -> None:
        self.sampler, self.prompts, self.tracker, self.cfg = sampler, prompts, tracker, cfg

    def next_batch(self, step: int) -> StepSample:
        start = time.perf_counter()
        sampled = self.sampler.sample(self.prompts, step_spec(self.cfg, step))
        curriculum = self.tracker.update(sampled.all_PG)
        return dataclasses.replace(sampled, curriculum=curriculum, wait_s=time.perf_counter() - start)

    def paused(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class Requeue:
    """The prompt stream, plus the prompts of groups dropped at their deadline, each drawn once more, with the
    next batch (a prompt dropped twice is not retried: its groups stall the engines)."""

    def __init__(self, prompts: PromptSource) -> None:
        self.inner, self.again, self.drawn, self.retried = prompts, [], [], set()

    def __iter__(self) -> Requeue:
        return self

    def __next__(self) -> list[Sample]:
        batch, self.again = next(self.inner) + self.again, []
        self.drawn += batch
        return batch

    @property
    def state(self) -> Mapping[str, int]:
        return self.inner.state

    def restore(self, state: Mapping[str, int]) -> None:
        self.inner.restore(state)

    def settle(self, groups_PG: list[list[ScoredRollout]]) -> list[Sample]:
        """The prompts drawn since the last call that came back with no group; re-queues those not yet retried."""
        back = {g[0].rollout.sample.id for g in groups_PG if g}
        dropped, self.drawn = [s for s in self.drawn if s.id not in back], []
        retry = [s for s in dropped if s.id not in self.retried]
        self.retried.update(s.id for s in retry)
        self.again += retry
        return dropped


class Producer:
    """One daemon thread running submitted calls in order. Daemon, so a run that fails while a draw waits on
    its (long) deadline still exits; the draw's own deadline ends the wait either way."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="rlvr-rollout-producer", daemon=True).start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self.calls.put((future, fn, args))
        return future

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            future, fn, args = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - re-raised in the loop by future.result()
                    future.set_exception(e)

    def close(self) -> None:
        self.calls.put(None)


class AsyncSource:
    """Bounded-staleness asynchronous sampling: the engines generate batches t + 1 .. t + k while step t trains.

    Batch t is submitted when the loop asks for batch t - k, i.e. once version t - k (the weights after
    t - k updates) is being served, so its rollouts begin on weights at most k updates older than the ones
    that train on them. A weight push meets the engines mid-generation; `rollout.update_mode` says what the
    requests in flight do (rlvr/rollout/async_worker.py). Groups enter a batch whole; a group not finished
    within `rollout.group_timeout_s` is dropped by its engine and its prompt re-queued once
    (`faults/groups_dropped`). A checkpoint records the prompt position and pass rates of the first batch
    not yet trained (`prompts`, `tracker`), so a resumed run re-draws what was generated but not trained.
    """

    def __init__(self, sampler: Sampler, prompts: PromptSource, tracker, cfg: Config, stop: int,
                 requeue: Requeue, backstop_s: float) -> None:
        self.sampler, self.cfg, self.stop, self.backstop_s = sampler, cfg, stop, backstop_s
        self.k = cfg.train.max_staleness
        self.stream, self._tracker = requeue, tracker
        self.lock = threading.Lock()  # the producer updates the tracker and reads the stream while a checkpoint reads them
        self.batches: dict[int, Future] = {}
        self.before: dict[int, tuple[dict, dict]] = {}  # batch t -> (prompt position, pass rates) before its draw
        self.started: dict[int, threading.Event] = {}
        self.producer = Producer()
        self.prompts, self.tracker = TrainedPrompts(self), TrainedRates(self)

    def next_batch(self, step: int) -> StepSample:
        for t in range(step, min(step + self.k + 1, self.stop)):
            if t not in self.batches:
                self.started[t] = threading.Event()
                self.batches[t] = self.producer.submit(self._produce, t)
        start = time.perf_counter()
        sampled = self._result(step, self.batches.pop(step))
        wait_s = time.perf_counter() - start
        with self.lock:
            self.before.pop(step, None)
            self.started.pop(step, None)
        return dataclasses.replace(sampled, wait_s=wait_s, extra=sampled.extra | staleness_histogram(sampled.all_PG, step, self.k))

    def _produce(self, t: int) -> StepSample:
        with self.lock:
            self.before[t] = (dict(self.stream.state), self._tracker.state())
        self.started[t].set()
        sampled = self.sampler.sample(self.stream, step_spec(self.cfg, t))
        dropped = self.stream.settle(sampled.all_PG)
        if dropped:
            print(f"rollout batch {t}: {len(dropped)} group(s) dropped at rollout.group_timeout_s "
                  f"({self.cfg.group_timeout_s():.0f} s); re-queued once: {', '.join(s.id for s in dropped[:5])}"
                  + (" ..." if len(dropped) > 5 else ""), flush=True)
        if not sampled.train_PG:
            raise CallTimeout(f"rollout batch {t}: every group was dropped at rollout.group_timeout_s "
                              f"({self.cfg.group_timeout_s():.0f} s): the engines generate too slowly for it")
        with self.lock:
            curriculum = self._tracker.update(sampled.all_PG)
        return dataclasses.replace(sampled, curriculum=curriculum, extra={"faults/groups_dropped": float(len(dropped))})

    def _result(self, t: int, future: Future) -> StepSample:
        # Not future.result(timeout): its TimeoutError would also catch the draw's own CallTimeout (a TimeoutError).
        if not futures.wait([future], timeout=self.backstop_s).done:
            raise CallTimeout(f"rollout source: batch {t} was not produced within {self.backstop_s:.0f} s "
                              "(its draws' deadlines, cluster.call_timeout_s, should have ended it first)")
        return future.result()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Let the batches in flight finish (kept for their steps); nothing new starts before the next
        `next_batch`, so an evaluation in the block has the engines and the current weights to itself."""
        futures.wait(self.batches.values(), timeout=self.backstop_s)  # a failed batch raises when its step asks for it
        yield

    def position(self, part: int) -> dict:
        """Part 0 (prompt position) or 1 (pass rates) as of the first batch not yet trained."""
        with self.lock:
            pending = sorted(self.started)
        if pending:  # submitted: wait for its draw to record where it began (its predecessors are trained)
            first = pending[0]
            if not self.started[first].wait(timeout=self.backstop_s):
                raise CallTimeout(f"rollout source: batch {first} did not start within {self.backstop_s:.0f} s")
            with self.lock:
                return self.before[first][part]
        with self.lock:  # nothing in flight: the live state is the trained one
            return dict(self.stream.state) if part == 0 else self._tracker.state()

    def close(self) -> None:
        for future in self.batches.values():
            future.cancel()
        self.producer.close()


class TrainedPrompts:
    """The prompt stream as a checkpoint sees it: its position before the first untrained batch's draw;
    `restore` sets the live stream (a resumed run restores before any batch is drawn)."""

    def __init__(self, source: AsyncSource) -> None:
        self.source = source

    @property
    def state(self) -> dict:
        return self.source.position(0)

    def restore(self, state: Mapping[str, int]) -> None:
        self.source.stream.restore(state)


class TrainedRates:
    """The pass-rate tracker as a checkpoint sees it: its state before the first untrained batch's update."""

    def __init__(self, source: AsyncSource) -> None:
        self.source = source

    def state(self) -> dict:
        return self.source.position(1)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.source._tracker.restore(state)


def staleness_histogram(groups_PG: list[list[ScoredRollout]], step: int, k: int) -> dict[str, float]:
    """The share of `step`'s rollouts begun d versions back (staleness/frac_d, d = 0..k), and of partial
    rollouts (weights updated while they were generated)."""
    flat = [s.rollout for group in groups_PG for s in group]
    ages = [step - r.policy_version for r in flat]
    return {f"staleness/frac_{d}": ages.count(d) / len(flat) for d in range(k + 1)} | {
        "staleness/partial_frac": statistics.fmean(r.last_policy_version is not None for r in flat),
    }


def build_source(cfg: Config, workers: list, reward_service, prompts: PromptSource, tracker, judge: Correctness,
                 stop: int) -> RolloutSource:
    """The run's rollout source: synchronous at train.max_staleness = 0, asynchronous above."""
    timeout_s = cfg.cluster.call_timeout_s
    stale = cfg.train.max_staleness > 0
    draw = functools.partial(generate_and_score, workers, reward_service, pass_rates=tracker.rates, timeout_s=timeout_s,
                             group_timeout_s=cfg.group_timeout_s() if stale else 0.0)
    a = cfg.algo
    sampler = DynamicSampling(draw, judge, cfg.data.batch_size, a.max_sampling_rounds) if a.dynamic_sampling \
        else OnePass(draw, judge)
    if not stale:
        return SyncSource(sampler, prompts, tracker, cfg)
    rounds = a.max_sampling_rounds if a.dynamic_sampling else 1
    # Past the draws' own deadlines: every batch queued ahead of this one, each of up to `rounds` draws.
    return AsyncSource(sampler, prompts, tracker, cfg, stop, Requeue(prompts), (cfg.train.max_staleness + 1) * rounds
                       * timeout_s + 60.0)
