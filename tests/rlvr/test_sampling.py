"""Sampling strategies over a plain `draw` function (the real one is exercised in test_train.py)."""

import itertools

from rlvr.data import PromptStream
from rlvr.rollout import SamplingSpec
from rlvr.sampling import DynamicSampling, OnePass, StageTimes, has_spread
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

SAMPLES = [Sample(id=str(i), prompt=str(i), answer="") for i in range(40)]
SPEC = SamplingSpec(n=2, max_tokens=4)


def group(sample, rewards):
    return [ScoredRollout(Rollout(sample, "", "stop", (1,), (-1.0,), (2,), 0), r, {"t": TermResult(r)}) for r in rewards]


def draw_by_parity(samples, spec):
    """Prompts with an even id get an informative group, odd ones an all-zero group."""
    return [group(s, [1.0, 0.0] if int(s.id) % 2 == 0 else [0.0, 0.0]) for s in samples], StageTimes(0.5, 0.1)


def test_has_spread_ignores_failed_rewards():
    sample = SAMPLES[0]
    assert has_spread(group(sample, [1.0, 0.0]))
    assert not has_spread(group(sample, [1.0, 1.0]))
    assert not has_spread(group(sample, [1.0, float("nan")]))


def test_one_pass_trains_on_everything():
    step = OnePass(draw_by_parity).sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert step.rounds == 1 and step.train_PG == step.all_PG and len(step.train_PG) == 4


def test_dynamic_sampling_fills_the_batch_with_informative_groups():
    sampler = DynamicSampling(draw_by_parity, batch_size=4, max_rounds=10)
    step = sampler.sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert len(step.train_PG) == 4 and all(has_spread(g) for g in step.train_PG)
    assert step.rounds >= 2 and len(step.all_PG) == 4 * step.rounds
    assert step.times.generate_s == 0.5 * step.rounds


def test_dynamic_sampling_stops_after_max_rounds_and_tops_up():
    def mostly_flat(samples, spec):
        counter = itertools.count()
        return [group(s, [1.0, 0.0] if next(counter) == 0 else [0.0, 0.0]) for s in samples], StageTimes(0.0, 0.0)

    step = DynamicSampling(mostly_flat, batch_size=4, max_rounds=2).sample(PromptStream(SAMPLES, 4, seed=1), SPEC)
    assert step.rounds == 2 and len(step.train_PG) == 4
    assert sum(has_spread(g) for g in step.train_PG) == 2  # the informative ones come first
