"""Rollout sources over a plain `draw` function that stamps the weight version being served (the real
engines run in tests/rlvr/rollout/test_async_worker.py and the whole loop in tests/rlvr/test_train.py)."""

import threading
import time

import pytest

from rlvr.config import Config, apply_override
from rlvr.data.curriculum import PassRateTracker
from rlvr.data.sources import PromptStream
from rlvr.rollout.sampling import OnePass, StageTimes
from rlvr.rollout.source import AsyncSource, Requeue, SyncSource, staleness_histogram, step_spec
from rlvr.runtime.remote import CallTimeout
from rlvr.scoring.correctness import Correctness
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

SAMPLES = [Sample(id=str(i), prompt=str(i), answer="") for i in range(40)]
JUDGE = Correctness("correct")


def config(*overrides: str) -> Config:
    cfg = Config()
    for item in ("data.batch_size=4", "algo.group_size=2", *overrides):
        cfg = apply_override(cfg, item)
    return cfg


class Engine:
    """Serves one weight version at a time, like the engines between weight pushes; records each draw."""

    def __init__(self, seconds: float = 0.0, drop: set[str] = frozenset()) -> None:
        self.version, self.seconds, self.drop = 0, seconds, set(drop)
        self.draws: list[tuple[int, list[str], int]] = []  # (seed, prompt ids, version at start)
        self.lock = threading.Lock()

    def draw(self, samples, spec):
        with self.lock:
            started = self.version
        time.sleep(self.seconds)
        self.draws.append((spec.seed, [s.id for s in samples], started))
        groups = [
            [ScoredRollout(Rollout(s, "", "stop", (1,), (-1.0,), (2,), started), c, {"correct": TermResult(c)})
             for c in (1.0, 0.0)]
            for s in samples if s.id not in self.drop
        ]
        return groups, StageTimes(self.seconds, 0.0)


def async_source(engine, cfg, stop=100):
    prompts = PromptStream(SAMPLES, 4, seed=1)
    tracker = PassRateTracker(JUDGE)
    return AsyncSource(OnePass(engine.draw, JUDGE), prompts, tracker, cfg, stop, Requeue(prompts), backstop_s=30.0)


def run_loop(source, engine, steps, train_s=0.0):
    """The training loop's view: take the step's batch, 'train', push version step + 1."""
    out = []
    for step in range(steps):
        sampled = source.next_batch(step)
        time.sleep(train_s)
        with engine.lock:
            engine.version = step + 1
        out.append(sampled)
    return out


def test_sync_source_draws_each_step_on_the_weights_of_the_step_before():
    engine, cfg = Engine(), config()
    prompts = PromptStream(SAMPLES, 4, seed=1)
    source = SyncSource(OnePass(engine.draw, JUDGE), prompts, PassRateTracker(JUDGE), cfg)
    batches = run_loop(source, engine, 3)
    assert [started for _, _, started in engine.draws] == [0, 1, 2]
    assert [seed for seed, _, _ in engine.draws] == [step_spec(cfg, t).seed for t in range(3)]
    assert batches[2].curriculum["curriculum/tracked_prompts"] == 12.0 and batches[0].extra == {}


@pytest.mark.parametrize("k", [1, 2])
def test_async_rollouts_are_never_more_than_k_versions_old_and_overlap_training(k):
    engine = Engine(seconds=0.05)
    source = async_source(engine, config(f"train.max_staleness={k}"))
    batches = run_loop(source, engine, 8, train_s=0.05)
    source.close()
    ages = [t - r.policy_version for t, b in enumerate(batches) for g in b.train_PG for r in (s.rollout for s in g)]
    assert max(ages) <= k and max(ages) == k  # overlapped: later batches start before the update that precedes them
    assert [seed for seed, _, _ in engine.draws][:8] == [step_spec(config(), t).seed for t in range(8)]  # seeds as sync
    hist = batches[5].extra
    assert sum(hist[f"staleness/frac_{d}"] for d in range(k + 1)) == pytest.approx(1.0)
    assert hist["faults/groups_dropped"] == 0.0 and hist["staleness/partial_frac"] == 0.0
    # The learner waited less than the engine took: the draw overlapped the 'training'.
    assert sum(b.wait_s for b in batches[1:]) < sum(b.times.generate_s for b in batches[1:])


def test_async_batches_stop_at_the_last_step():
    engine = Engine()
    source = async_source(engine, config("train.max_staleness=2"), stop=3)
    run_loop(source, engine, 3)
    source.close()
    assert len(engine.draws) == 3  # nothing drawn for steps that will not train


def test_a_checkpoint_records_the_prompt_position_and_pass_rates_of_the_trained_batches():
    engine = Engine(seconds=0.02)
    cfg = config("train.max_staleness=1")
    source = async_source(engine, cfg)
    run_loop(source, engine, 3)  # batch 3 is in flight (or done) while a checkpoint after step 3 is written
    position, rates = dict(source.prompts.state), source.tracker.state()
    assert len(rates["rates"]) == 12  # three batches of 4 prompts trained, the fourth not counted
    # A resumed run re-draws batch 3 from this position: the same prompts as the batch that was never trained.
    resumed = PromptStream(SAMPLES, 4, seed=1)
    resumed.restore(position)
    with source.paused():  # batch 3's draw is over
        source.close()
    assert [s.id for s in next(resumed)] == engine.draws[3][1]


def test_a_dropped_group_is_counted_and_its_prompt_requeued_once():
    first = PromptStream(SAMPLES, 4, seed=1)
    slow = next(first)[0].id  # the first prompt of batch 0
    engine = Engine(drop={slow})
    source = async_source(engine, config("train.max_staleness=1"))
    batches = run_loop(source, engine, 3)
    source.close()
    assert batches[0].extra["faults/groups_dropped"] == 1.0 and len(batches[0].train_PG) == 3
    assert slow in engine.draws[1][1] and len(engine.draws[1][1]) == 5  # re-queued into the next batch
    assert batches[1].extra["faults/groups_dropped"] == 1.0 and slow not in engine.draws[2][1]  # only once


def test_an_engine_failure_reaches_the_loop_at_its_step():
    def broken(samples, spec):
        raise CallTimeout("rollout engine 0: generate did not finish within 5 s (cluster.call_timeout_s)")

    prompts = PromptStream(SAMPLES, 4, seed=1)
    source = AsyncSource(OnePass(broken, JUDGE), prompts, PassRateTracker(JUDGE), config("train.max_staleness=1"), 10,
                         Requeue(prompts), backstop_s=5.0)
    with pytest.raises(CallTimeout, match="rollout engine 0: generate"):
        source.next_batch(0)
    source.close()


def test_paused_lets_the_batches_in_flight_finish():
    engine = Engine(seconds=0.2)
    source = async_source(engine, config("train.max_staleness=1"))
    source.next_batch(0)  # batch 1 now generating
    with source.paused():
        assert len(engine.draws) == 2  # batch 1 finished before the block
    source.close()


def test_staleness_histogram():
    def rollout(version, last=None):
        return ScoredRollout(Rollout(SAMPLES[0], "", "stop", (1,), (-1.0,), (2,), version, last), 1.0, {})

    hist = staleness_histogram([[rollout(4), rollout(3, 4)], [rollout(3), rollout(3)]], step=4, k=2)
    assert hist == {"staleness/frac_0": 0.25, "staleness/frac_1": 0.75, "staleness/frac_2": 0.0,
                    "staleness/partial_frac": 0.25}
