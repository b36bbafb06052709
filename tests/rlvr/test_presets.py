"""Every method preset runs a few real steps (Ray, vLLM, rewards, learner, critic or teacher) with finite metrics."""

import json
import math
from pathlib import Path

import pytest

from rlvr.config import load_config
from rlvr.train import train

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

PRESETS = sorted(p.stem.removeprefix("tiny_arith_") for p in Path("examples").glob("tiny_arith_*.toml"))
SMALL = ["sft.steps=30", "sft.batch_size=16", "data.batch_size=4", "algo.group_size=4", "eval.size=8",
         "data.train_size=64", "train.steps=3"]


def test_every_method_has_a_preset():
    assert set(PRESETS) >= {"grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "cispo", "opd"}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_three_steps_with_finite_metrics(name, ray_cluster, tiny_model, tmp_path):
    # The test teacher is the test model itself (the builtin teacher takes minutes to build); the
    # preset's distillation path is the same.
    teacher = [f"distill.teacher={tiny_model}", "sft.steps=0"] if name == "opd" else []
    cfg = load_config(f"examples/tiny_arith_{name}.toml", [f"model.path={tiny_model}", *SMALL, *teacher])
    train(cfg, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        bad = {k: v for k, v in record.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
        assert not bad, (name, bad)
    if name == "ppo":
        assert all("critic/value_loss" in r and "critic/explained_variance" in r for r in records)
    if name == "opd":
        assert all("distill/kl" in r for r in records)
        assert records[0]["distill/kl"] == pytest.approx(0.0, abs=1e-4)  # no SFT: the student is its own teacher
