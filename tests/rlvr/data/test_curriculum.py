"""Per-prompt pass-rate tracker and the pass-rate curriculum (the real loop runs them in test_train.py)."""

import collections
import json
import math

import pytest

from rlvr.config import CurriculumConfig, load_config
from rlvr.data.curriculum import (
    PassRateCurriculum,
    PassRateTracker,
    build_prompt_source,
    build_tracker,
    curriculum_state,
)
from rlvr.data.sources import DataError, PromptStream
from rlvr.scoring.correctness import Correctness
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult

JUDGE = Correctness("math")
SAMPLES = [Sample(id=f"p{i}", prompt=str(i), answer="") for i in range(30)]


def group(sample: Sample, *correct: float) -> list[ScoredRollout]:
    rollout = Rollout(sample, "", "stop", (1,), (-1.0,), (2,), 0)
    return [ScoredRollout(rollout, c, {"math": TermResult(c, "ok" if not math.isnan(c) else "error")}) for c in correct]


def test_tracker_keeps_an_ema_per_prompt_and_skips_groups_without_a_verdict():
    tracker = PassRateTracker(JUDGE, decay=0.5)
    a, b = SAMPLES[:2]
    metrics = tracker.update([group(a, 1, 1, 0, 0), group(b, math.nan, math.nan)])
    assert tracker.rates == {"p0": 0.5} and metrics["curriculum/mean_pass_rate"] == 0.5
    tracker.update([group(a, 1, 1, 1, 1)])
    assert tracker.rates["p0"] == 0.75 and tracker.seen["p0"] == 2  # 0.5 * 0.5 + 0.5 * 1
    tracker.update([group(a, 1, math.nan)])  # failed verdicts are left out of the group's rate
    assert tracker.rates["p0"] == 0.875


def test_tracker_retires_after_n_all_correct_or_all_wrong_groups_in_a_row():
    tracker = PassRateTracker(JUDGE, retire_after=3)
    easy, hard, mixed = SAMPLES[:3]
    for _ in range(2):
        tracker.update([group(easy, 1, 1), group(hard, 0, 0), group(mixed, 1, 1)])
    tracker.update([group(mixed, 1, 0)])  # breaks the run: its count starts again
    metrics = tracker.update([group(easy, 1, 1), group(hard, 0, 0), group(mixed, 1, 1)])
    assert tracker.retired == {"p0": "solved", "p1": "unsolved"}
    assert metrics["curriculum/retired_solved"] == 1 and metrics["curriculum/retired_unsolved"] == 1
    assert metrics["curriculum/tracked_prompts"] == 3
    assert PassRateTracker(JUDGE, retire_after=0).update([group(easy, 1, 1)] * 9)["curriculum/retired_solved"] == 0


def test_curriculum_favours_prompts_near_the_target():
    tracker = PassRateTracker(JUDGE)
    for i, s in enumerate(SAMPLES):  # p0..p9 always solved, p10..p19 half, p20..p29 never
        tracker.update([group(s, 1, 1) if i < 10 else group(s, 1, 0) if i < 20 else group(s, 0, 0)])
    source = PassRateCurriculum(SAMPLES, 5, tracker, target=0.5, width=0.25, seed=3)
    counts = collections.Counter(s.id for _ in range(200) for s in next(source))
    near = sum(counts[f"p{i}"] for i in range(10, 20))
    assert near > 0.9 * 1000  # 5 of a batch of 5 nearly always: weight 1 against exp(-4) = 0.018
    assert all(len({s.id for s in next(source)}) == 5 for _ in range(20))  # without replacement
    # Unseen prompts get the prior, so a target of 0 favours the never-solved prompts... and the prior.
    low = PassRateCurriculum(SAMPLES, 5, tracker, target=0.0, prior=0.0, seed=3)
    drawn = collections.Counter(s.id for _ in range(100) for s in next(low))
    assert sum(drawn[f"p{i}"] for i in range(20, 30)) > 0.9 * 500


def test_retired_prompts_are_never_drawn_and_too_few_left_is_an_error():
    tracker = PassRateTracker(JUDGE, retire_after=1)
    tracker.update([group(s, 1, 1) for s in SAMPLES[:26]])
    source = PassRateCurriculum(SAMPLES, 4, tracker, seed=0)
    assert {s.id for s in next(source)} == {"p26", "p27", "p28", "p29"}
    tracker.update([group(SAMPLES[26], 0, 0)])
    with pytest.raises(DataError, match="retired all but 3 of 30"):
        next(source)


def test_draws_are_deterministic_and_resume_from_the_saved_state(tmp_path):
    tracker = PassRateTracker(JUDGE, retire_after=2)
    tracker.update([group(s, 1, 0 if i % 3 else 1) for i, s in enumerate(SAMPLES)])
    source = PassRateCurriculum(SAMPLES, 6, tracker, seed=7)
    next(source), next(source)
    saved = json.loads(json.dumps(curriculum_state(tracker, source)))  # what the run writes
    expected = [next(source) for _ in range(3)]

    tracker2 = PassRateTracker(JUDGE, retire_after=2)
    tracker2.restore(saved["tracker"])
    resumed = PassRateCurriculum(SAMPLES, 6, tracker2, seed=7)
    resumed.restore(saved["prompts"])
    assert [next(resumed) for _ in range(3)] == expected
    assert tracker2.state() == tracker.state()
    same = PassRateCurriculum(SAMPLES, 6, tracker, seed=7)
    other = PassRateCurriculum(SAMPLES, 6, tracker, seed=8)
    assert next(same) == next(PassRateCurriculum(SAMPLES, 6, tracker, seed=7)) != next(other)


def test_builders_follow_the_config_and_the_tracker_retires_only_under_a_curriculum():
    off, on = CurriculumConfig(), CurriculumConfig(mode="pass_rate", retire_after=3, target=0.25)
    assert isinstance(build_prompt_source(off, SAMPLES, 4, 0, build_tracker(off, JUDGE)), PromptStream)
    assert build_tracker(off, JUDGE).retire_after == 0 and build_tracker(on, JUDGE).retire_after == 3
    source = build_prompt_source(on, SAMPLES, 4, 0, build_tracker(on, JUDGE))
    assert isinstance(source, PassRateCurriculum) and source.target == 0.25
    cfg = load_config(None, ["curriculum.mode=pass_rate", "curriculum.retire_after=8"])
    assert cfg.curriculum.mode == "pass_rate" and cfg.curriculum.retire_after == 8
    with pytest.raises(ValueError, match="curriculum"):
        load_config(None, ["curriculum.target=1.5"])
