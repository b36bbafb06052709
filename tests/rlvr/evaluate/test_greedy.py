"""Held-out evaluation with a real engine and reward service: it measures, and changes no reward state."""

import pytest
import ray

from rlvr.config import RewardConfig, RewardTermConfig
from rlvr.evaluate.greedy import evaluate
from rlvr.rollout.sampling import generate_and_score
from rlvr.rollout.worker import SamplingSpec
from rlvr.scoring.correctness import Correctness
from rlvr.scoring.service import build_reward_service
from rlvr.types import Rollout, Sample

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
HELD_OUT = [Sample(id=f"h{i}", prompt=f"{i} + {i} =", answer="") for i in range(6)]


def test_held_out_evaluation_leaves_laser_d_state_unchanged(engines):
    worker = engines[0]
    # The correctness term is `truncation` with penalty +1: the random tiny model's 4-token greedy answers
    # run to the limit, so they count as correct, and a LASER-D that learned from them would record 4.
    cfg = RewardConfig(terms=(
        RewardTermConfig("truncation", kwargs={"penalty": 1.0}, label="truncated"),
        RewardTermConfig("laser_d", kwargs={"initial_target": 100, "min_lengths": 1, "coverage": 1.0}),
    ), workers=1)
    service = build_reward_service(cfg)
    ray.get(worker.ready.remote())
    probe = [Rollout(Sample("probe", "q", ""), "x", "length", (0,) * 50, (0.0,) * 50, (), 0)]

    def probe_value() -> float:  # 0.5 while the easy bucket's target is above 50 tokens
        return ray.get(service.score_groups.remote([probe], {}, False))[0][0].terms["laser_d"].value

    assert probe_value() == 0.5
    metrics = evaluate([worker], service, HELD_OUT, max_tokens=4, judge=Correctness("truncated"))
    assert metrics["eval/accuracy"] > 0 and metrics["eval/prompts"] == 6  # LASER-D had something to learn
    assert probe_value() == 0.5
    # The same greedy answers scored as training scores them do move LASER-D's target to 4 tokens.
    generate_and_score([worker], service, HELD_OUT, SamplingSpec(n=1, max_tokens=4, temperature=0.0))
    assert probe_value() == 0.0
    ray.get(service.close.remote())
