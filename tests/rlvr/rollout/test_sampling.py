"""Sampling strategies over a plain `draw` function (the real one is exercised in test_train.py)."""

import itertools

import pytest

from rlvr.data.sources import PromptStream
from rlvr.rollout.sampling import DynamicSampling, OnePass, StageTimes
from rlvr.rollout.worker import SamplingSpec
from rlvr.scoring.correctness import Correctness
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

SAMPLES = [Sample(id=str(i), prompt=str(i), answer="") for i in range(40)]
SPEC = SamplingSpec(n=2, max_tokens=4)
JUDGE = Correctness("correct")


def group(sample, correct, length_bonus=(0.0, 0.0)):
    """A group whose reward is correctness plus a length term."""
    return [
        ScoredRollout(Rollout(sample, "", "stop", (1,), (-1.0,), (2,), 0), c + b,
                      {"correct": TermResult(c), "length": TermResult(b)})
        for c, b in zip(correct, length_bonus)
    ]


def draw_by_parity(samples, spec):
    """Prompts with an even id get an informative group, odd ones an all-wrong group."""
    return [group(s, [1.0, 0.0] if int(s.id) % 2 == 0 else [0.0, 0.0]) for s in samples], StageTimes(0.5, 0.1)


def test_one_pass_trains_on_everything():
    step = OnePass(draw_by_parity, JUDGE).sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert step.rounds == 1 and step.train_PG == step.all_PG and len(step.train_PG) == 4
    evens = sum(int(g[0].rollout.sample.id) % 2 == 0 for g in step.all_PG)
    assert step.metrics() == {"sampling/rounds": 1.0, "sampling/informative_groups": evens,
                              "sampling/topped_up_groups": 0.0}


def test_dynamic_sampling_fills_the_batch_with_informative_groups():
    sampler = DynamicSampling(draw_by_parity, JUDGE, batch_size=4, max_rounds=10)
    step = sampler.sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert len(step.train_PG) == 4 and all(JUDGE.informative(g) for g in step.train_PG)
    assert step.rounds >= 2 and len(step.all_PG) == 4 * step.rounds
    assert step.times.generate_s == 0.5 * step.rounds
    assert step.informative_groups >= 4 and step.topped_up_groups == 0


def test_dynamic_sampling_stops_after_max_rounds_and_tops_up():
    def mostly_flat(samples, spec):
        counter = itertools.count()
        return [group(s, [1.0, 0.0] if next(counter) == 0 else [0.0, 0.0]) for s in samples], StageTimes(0.0, 0.0)

    step = DynamicSampling(mostly_flat, JUDGE, batch_size=4, max_rounds=2).sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert step.rounds == 2 and len(step.train_PG) == 4
    assert [JUDGE.informative(g) for g in step.train_PG] == [True, True, False, False]  # informative ones first
    assert step.metrics()["sampling/informative_groups"] == 2 and step.metrics()["sampling/topped_up_groups"] == 2


def test_all_correct_groups_that_differ_only_by_length_are_filtered():
    """DAPO filters on correctness: these groups' rewards differ (1.1 vs 0.9), yet no answer is wrong,
    and group-std normalisation would turn the length difference into advantages of +-1."""

    def all_correct_by_length(samples, spec):
        return [group(s, [1.0, 1.0], length_bonus=(0.1, -0.1)) for s in samples], StageTimes(0.0, 0.0)

    step = DynamicSampling(all_correct_by_length, JUDGE, batch_size=4, max_rounds=3).sample(
        PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert step.rounds == 3  # kept drawing: no group was informative
    assert step.informative_groups == 0 and step.topped_up_groups == 4


@pytest.mark.parametrize("max_rounds", [4, 50])
def test_round_seeds_differ_across_steps_and_rounds(max_rounds):
    """No two draws of a run share a seed: with 50 rounds, round 32 of one step was round 1 of the next."""
    seeds = []

    def all_wrong(samples, spec):
        seeds.append(spec.seed)
        return [group(s, [0.0, 0.0]) for s in samples], StageTimes(0.0, 0.0)

    sampler = DynamicSampling(all_wrong, JUDGE, batch_size=4, max_rounds=max_rounds)
    prompts = PromptStream(SAMPLES, 4, seed=1)
    for step in range(10):  # the step seeds of rlvr/train.py
        sampler.sample(prompts, SamplingSpec(n=2, max_tokens=4, seed=7 * 100_003 + step))
    assert len(seeds) == 10 * max_rounds and len(set(seeds)) == len(seeds)
    if max_rounds < 32:  # the default draws are the ones runs made before the fix
        assert seeds[:2] == [(7 * 100_003) * 31 + 1, (7 * 100_003) * 31 + 2]


@pytest.mark.ray
def test_a_stuck_engine_is_an_error_naming_it(ray_cluster):
    """Generation has a deadline: an engine that never finishes its stream is named, not waited on forever."""
    import ray

    from rlvr.rollout.sampling import generate_and_score
    from rlvr.runtime.remote import CallTimeout

    @ray.remote(num_cpus=0)
    class StuckEngine:
        def generate(self, samples, spec):
            import time

            time.sleep(60)
            yield []

    @ray.remote(num_cpus=0)
    class DoneEngine:
        def generate(self, samples, spec):
            yield from ()

    workers = [DoneEngine.remote(), StuckEngine.remote()]
    samples = [Sample(id=str(i), prompt=str(i), answer="0") for i in range(2)]
    with pytest.raises(CallTimeout, match=r"rollout engine 1: generate did not finish within 2 s"):
        generate_and_score(workers, None, samples, SamplingSpec(n=2, max_tokens=4), timeout_s=2)
    for w in workers:
        ray.kill(w)
