"""rlvr/runtime/opening.py: how a run opens (afresh or from a checkpoint), the SFT bar's chunks, summary.json."""

import pytest

from rlvr.config import load_config
from rlvr.data.sources import Splits
from rlvr.runtime.opening import Afresh, FromCheckpoint, Progress, choose_opening, sft_chunk
from rlvr.runtime.resume import Resumed
from rlvr.scoring.correctness import Correctness


def test_the_opening_is_chosen_by_the_checkpoint_found():
    cfg = load_config("examples/tiny_arith_grpo.toml", [])
    splits, correctness = Splits(train=[], held_out=[object()] * 3, sft=[]), Correctness("reasoning_gym")
    fresh = choose_opening(None, cfg, splits, 8, correctness)
    assert isinstance(fresh, Afresh) and fresh.step == 0
    resumed = choose_opening(Resumed(step=4, path="ckpt", timeout_s=10.0), cfg, splits, 8, correctness)
    assert isinstance(resumed, FromCheckpoint) and resumed.step == 4 and resumed.held_out == 3


def test_the_final_summary_adds_both_evaluations_and_the_reward_ends():
    progress = Progress({"model": "m", "reward/failed": 2.0}, {"eval/accuracy": 0.25}, held_out=8)
    progress.rewards_per_step += [float(r) for r in range(30)]
    final = progress.final({"eval/accuracy": 0.5}, wall_s=3.0)
    assert final == {"model": "m", "reward/failed": 2.0, "eval/accuracy_before_rl": 0.25, "eval/accuracy_after_rl": 0.5,
                     "eval/prompts": 8, "reward/first10_mean": 4.5, "reward/last10_mean": 24.5, "rl_steps": 30,
                     "wall_s": 3.0}
    assert Progress({}, {"eval/accuracy": 0.1}).final({"eval/accuracy": None}, 1.0)["reward/first10_mean"] is None


@pytest.mark.parametrize(("steps", "chunk", "calls"), [
    (400, 40, 10),  # the demo: was 8 calls of 50, the bar at 0/400 for an eighth of the stage
    (5000, 50, 100), (30, 3, 10), (19, 1, 19), (5, 1, 5), (1, 1, 1),
])
def test_the_sft_bar_moves_every_tenth_of_the_stage(steps, chunk, calls):
    assert sft_chunk(steps) == chunk and -(-steps // chunk) == calls
    assert chunk <= max(1, steps // 10)
