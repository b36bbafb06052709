"""Every method preset: its algorithm makes a finite update of the real learner (all of them, in-process), and
a few real steps of the whole loop (Ray, vLLM, rewards, learner, critic or teacher) have finite metrics.

The whole-loop runs cost ~25 s each, nearly all of it starting the run's actors, so the default suite runs
two that between them take every path the loop has beyond GRPO's: PPO's critic with the LoRA preset's
adapters (merged into the engines at each sync), and the distillation teacher with the asynchronous preset's
settings (vLLM's AsyncLLM, rollouts one step stale). The other presets' runs, the LoRA and async presets'
own among them, are `slow` (`make test-slow`): the GRPO loop itself, with dynamic sampling
and two learner ranks, is tests/rlvr/test_train.py's run, and two minibatches run end to end in
tests/rlvr/runtime/test_resume.py. Each preset's algorithm still updates the real learner in the default suite
(test_preset_algorithm_makes_a_finite_update).
"""

import json
import math
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from learner_cases import PROMPTS, groups_of  # noqa: E402

from rlvr.algorithms.estimate import OutcomeAdvantages
from rlvr.config import load_config
from rlvr.learner.actor import Learner
from rlvr.learner.build import learner_kwargs
from rlvr.train import train

PRESETS = sorted(p.stem.removeprefix("tiny_arith_") for p in Path("examples").glob("tiny_arith_*.toml"))
SMALL = ["sft.steps=30", "sft.batch_size=16", "data.batch_size=4", "algo.group_size=4", "eval.size=8",
         "data.train_size=64", "train.steps=3"]
LOOP_PATHS = {"ppo", "opd"}  # the whole loop in the default suite; the other presets' runs are slow
# The LoRA preset's adapters, carried by PPO's run (one start of the actors for both paths). Not the teacher's:
# there the student starts as its own teacher, its advantages are all 0 and the adapters would never move.
LORA = load_config("examples/tiny_arith_lora.toml").learner.lora
STALE = load_config("examples/tiny_arith_async.toml")
RIDERS = {  # what else each default-suite run carries
    "ppo": [f"learner.lora={{rank={LORA.rank}, alpha={LORA.alpha}}}"],
    "opd": [f"train.max_staleness={STALE.train.max_staleness}", f"rollout.update_mode={STALE.rollout.update_mode}",
            f"cluster.rollout_cores={STALE.cluster.rollout_cores}"],
}


def test_every_method_has_a_preset():
    assert set(PRESETS) >= {"grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "cispo", "opd"}


def _not_finite(record: dict) -> dict:
    return {k: v for k, v in record.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in ("ppo", "opd")])  # the critic's and teacher's: below
def test_preset_algorithm_makes_a_finite_update(name, tiny_model):
    """The preset's advantage estimator and loss (policy, KL, entropy, aggregation, minibatches, LoRA) on the
    learner the run would build, two steps on groups with a reward spread."""
    cfg = load_config(f"examples/tiny_arith_{name}.toml", [f"model.path={tiny_model}", "learner.micro_batch_size=2"])
    assert cfg.algo.advantage != "gae" and not cfg.distill.teacher
    completions = [[(22, 23, 260), (24, 25, 260)], [(25, 26, 27, 28, 260), (29, 260)], [(33, 260), (34, 35, 260)]]
    batch = OutcomeAdvantages(cfg.algo.advantage, cfg.algo.advantage_norm, None).make_batch(groups_of(PROMPTS, completions))
    learner = Learner.__ray_actor_class__(tiny_model, **learner_kwargs(cfg))
    before = {k: v.clone() for k, v in learner.named_weights().items()}
    for _ in range(2):
        metrics = learner.train_step(batch)
        assert not _not_finite(metrics), (name, _not_finite(metrics))
    after = learner.named_weights()
    assert any(not (after[k] == before[k]).all() for k in before)


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("name", [n if n in LOOP_PATHS else pytest.param(n, marks=pytest.mark.slow) for n in PRESETS])
def test_preset_runs_three_steps_with_finite_metrics(name, ray_cluster, tiny_model, tmp_path):
    # The test teacher is the test model itself (the builtin teacher takes minutes to build); the
    # preset's distillation path is the same.
    teacher = [f"distill.teacher={tiny_model}", "sft.steps=0"] if name == "opd" else []
    cfg = load_config(f"examples/tiny_arith_{name}.toml",
                      [f"model.path={tiny_model}", *SMALL, *teacher, *RIDERS.get(name, [])])
    assert (cfg.learner.lora.rank > 0) == (name in ("ppo", "lora"))
    assert (cfg.train.max_staleness > 0) == (name in ("opd", "async"))
    train(cfg, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        assert not _not_finite(record), (name, _not_finite(record))
    if name == "ppo":
        assert all("critic/value_loss" in r and "critic/explained_variance" in r for r in records)
    if cfg.train.max_staleness:  # step t trains rollouts begun on the weights before step t - 1's update
        assert [r["staleness/max"] for r in records] == [0.0, 1.0, 1.0]
        assert all(r["staleness/frac_0"] + r["staleness/frac_1"] == 1.0 and r["faults/groups_dropped"] == 0.0
                   for r in records)
        assert records[1]["timing/wait_for_rollouts_s"] < records[1]["timing/generate_s"]  # generated during step 0
    if name == "opd":
        assert all("distill/kl" in r for r in records)
        assert records[0]["distill/kl"] == pytest.approx(0.0, abs=1e-4)  # no SFT: the student is its own teacher
    if cfg.learner.lora.rank:
        # the engines sampled with the merged adapters the learner trained: its log-probs of their tokens agree
        assert all(r["logprob_diff/max"] <= 1e-3 for r in records), [r["logprob_diff/max"] for r in records]
        final, initial = (load_file(f"{d}/model.safetensors") for d in (tmp_path, tiny_model))
        assert final.keys() == initial.keys()  # merged under the base model's names, no adapter tensors
        assert any(not (final[k] == initial[k]).all() for k in initial)
