"""A short real run of the whole loop: Ray actors, vLLM, the reward service, the learner, weight sync."""

import json

import pytest
from safetensors.torch import load_file

from rlvr.config import load_config
from rlvr.train import train

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REQUIRED = [
    "step", "reward/mean", "reward/std", "response_length/mean", "loss", "entropy", "kl",
    "logprob_diff/max", "logprob_diff/mean", "timing/generate_s", "timing/reward_s", "timing/train_s",
    "timing/sync_s", "timing/step_s", "throughput/tokens_per_s", "clip_frac/low", "clip_frac/high",
    "sampling/rounds", "sampling/informative_groups", "sampling/topped_up_groups", "curriculum/mean_pass_rate",
    "curriculum/retired_solved", "curriculum/retired_unsolved", "reward/laser_d/mean",
]


@pytest.fixture(scope="module")
def run(ray_cluster, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config("examples/tiny_arith_grpo.toml", [
        f"model.path={tiny_model}", "sft.steps=100", "sft.batch_size=32", "train.steps=3", "eval.size=16",
        "data.batch_size=4", "algo.group_size=4", "data.train_size=500", "loss.kl_coef=0.01", "learner.ranks=2",
        "algo.dynamic_sampling=true", "curriculum.mode=pass_rate", "curriculum.retire_after=2", "train.save_every=2",
        "eval.every=2", "eval.n=2", "eval.k=[1, 2]", "eval.temperature=1.0",
        # LASER-D at weight 0: computed from the driver's pass rates and logged, not summed.
        'reward.terms=[{name="reasoning_gym"}, {name="laser_d", weight=0.0, kwargs={initial_target=4}}]',
    ])
    summary = train(cfg, out)
    return out, summary


def test_metrics_have_every_required_key(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        missing = [k for k in REQUIRED if k not in record]
        assert not missing, missing
        assert 0.0 <= record["reward/mean"] <= 1.0
        assert record["timing/step_s"] >= record["timing/generate_s"] > 0
    # fp32 on both sides: vLLM's sampler and the learner agree before the first update
    assert records[0]["logprob_diff/max"] <= 1e-3
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # pi == pi_ref before any RL update
    assert records[-1]["kl"] > 0
    # eval.every = 2: the sampled evaluator after step 2 only (index 1), n = 2 samples of 16 prompts
    assert "eval/pass@1" not in records[0] and "eval/pass@1" not in records[2]
    assert records[1]["eval/pass@1"] == pytest.approx(records[1]["eval/avg@2"])
    assert records[1]["eval/pass@1"] <= records[1]["eval/pass@2"] <= 1.0
    assert records[1]["eval/prompts"] == 16 and records[1]["eval/samples_per_prompt"] == 2


def test_plot_of_the_run(run):
    from rlvr.observe.plot import plot_runs

    out, _ = run
    written = plot_runs([out], out / "plots")
    assert [p.name for p in written] == ["reward.png", "correctness.png", "response_length.png", "kl.png",
                                         "entropy.png", "step_time.png", "eval.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_summary_and_final_weights(run, tiny_model):
    out, summary = run
    saved = json.loads((out / "summary.json").read_text())
    assert saved == pytest.approx(summary)
    for key in ("eval/accuracy_before_rl", "eval/accuracy_after_rl"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["rl_steps"] == 3 and saved["eval/prompts"] == 16
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward/failed", "reward/reasoning_gym/errors", "reward/reasoning_gym/timeouts",
                "reward/laser_d/crashes"):  # the run's failure totals, per term
        assert saved[key] == sum(r[key] for r in records)
    final = load_file(out / "model.safetensors")
    initial = load_file(f"{tiny_model}/model.safetensors")
    assert max((final[k] - initial[k]).abs().max().item() for k in initial) > 1e-3  # SFT + RL changed them
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert len(AutoTokenizer.from_pretrained(out)) == 264
    assert json.loads((out / "run_config.json").read_text())["train"]["steps"] == 3
    assert not list(out.glob(".*tmp*"))  # no temporary folders left behind


def test_a_reward_that_raises_on_most_rollouts_ends_the_run_naming_the_term_and_the_share(
    ray_cluster, tiny_model, tmp_path, capsys, monkeypatch
):
    from pathlib import Path

    from rlvr.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the driver resolves the plugin by its dotted path
    # 50 prompts x 2 completions; the reward raises on all but the first prompt's: 98 of 100 rollouts voided
    rows, held_out = tmp_path / "rows.jsonl", tmp_path / "held_out.jsonl"
    rows.write_text("".join(json.dumps({"question": f"{i // 10} + {i % 10}", "answer": str(i // 10 + i % 10),
                                        "verifiable": i == 0}) + "\n" for i in range(50)))
    held_out.write_text("".join(json.dumps({"question": f"{i} - 1", "answer": str(i - 1)}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    code = main([
        "train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out), "--max-steps", "2",
        f"model.path={tiny_model}", "sft.steps=0", "eval.size=4", f"data.source={rows}", f"data.eval_source={held_out}",
        "data.prompt_key=question", "data.batch_size=50", "algo.group_size=2",
        "reward.terms=[{name=\"tests.rlvr.reward_plugins:boom_unless_flagged\"}]",
    ])
    err = capsys.readouterr().err.strip().splitlines()
    print("\n".join(err))  # shown on failure: what a user sees
    assert code == 1
    # the last line is the error; it names the share, the threshold, the term, the kind and the exception
    assert err[-1] == ("rlvr: reward error: 98 of 100 rollouts of the step (98.0%) got no reward "
                       "(reward.max_failed_frac = 0.5): term 'boom_unless_flagged' error on 98/100 (ValueError: boom)")
    assert err[-2] == f"rlvr: run log (vLLM, Ray): {out / 'run.log'}"
    # the first failure was printed when it happened, once, with its sample
    first = [line for line in err if line.startswith("reward term 'boom_unless_flagged': error on sample")]
    assert len(first) == 1 and "ValueError: boom" in first[0] and "reward/boom_unless_flagged/errors" in first[0]
    assert any(line.startswith("reward terms: boom_unless_flagged x1 (tests.rlvr.reward_plugins:") for line in err)
    # the attempted step is in metrics.jsonl with its failure counts; nothing else is
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 0 and record["reward/failed"] == record["reward/boom_unless_flagged/errors"] == 98.0
    assert not (out / "summary.json").exists()


def test_zero_steps_is_sft_and_one_evaluation(ray_cluster, tiny_model, tmp_path):
    import io

    from rich.console import Console

    out, text = tmp_path / "run", io.StringIO()
    cfg = load_config("examples/tiny_arith_grpo.toml", [
        f"model.path={tiny_model}", "sft.steps=10", "sft.batch_size=8", "train.steps=0", "eval.size=8",
        "data.batch_size=4", "algo.group_size=2", "data.train_size=50",
    ])
    summary = train(cfg, out, console=Console(file=text, width=200))
    said = text.getvalue()
    assert said.count("evaluating 8 held-out prompts") == 1 and "after RL" not in said
    assert "train.steps = 0: no RL steps; the evaluation above is the run's result" in said
    saved = (out / "summary.json").read_text()
    assert "NaN" not in saved and json.loads(saved) == summary
    assert summary["eval/accuracy_after_rl"] is None and summary["reward/first10_mean"] is None
    assert summary["rl_steps"] == 0 and summary["sft/final_loss"] > 0
    assert (out / "metrics.jsonl").read_text() == ""


def test_curriculum_tracks_every_group_and_saves_its_state(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = json.loads((out / "curriculum_state.json").read_text())
    tracker = state["tracker"]
    # Every group drawn (all rounds of dynamic sampling) updated its prompt's pass rate.
    assert sum(tracker["seen"].values()) == 4 * sum(r["sampling/rounds"] for r in records)
    assert state["prompts"]["draws"] == sum(r["sampling/rounds"] for r in records)
    assert all(0.0 <= rate <= 1.0 for rate in tracker["rates"].values())
    retired = list(tracker["retired"].values())
    assert records[-1]["curriculum/retired_solved"] == retired.count("solved")
    assert records[-1]["curriculum/retired_unsolved"] == retired.count("unsolved")
    for r in records:  # the 4 trained groups: informative ones first, then the top-up
        assert min(r["sampling/informative_groups"], 4) + r["sampling/topped_up_groups"] == 4
