import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.config import load_config, to_dict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_dry_run_validates_every_example_and_starts_nothing(path, capsys, tmp_path, monkeypatch):
    cfg = load_config(path)
    if any("shared/data" in s and not Path(s).exists() for s in (cfg.data.source, cfg.data.eval_source)):
        monkeypatch.setattr("rlvr.preflight.check_source", lambda *args: None)  # no ../shared/data: skip the data check
    out = tmp_path / "run"
    assert main(["train", str(path), "--output-dir", str(out), "--dry-run", "--max-steps", "3", "algo.epochs=2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # --max-steps stops the run early; it is no config change (the schedules still span train.steps)
    assert printed == to_dict(load_config(path, ["algo.epochs=2"]))
    assert not out.exists()


def test_resume_without_a_checkpoint_or_with_a_changed_config_fails_before_anything_starts(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"rlvr: resume error: --resume: no complete checkpoint in {out / 'checkpoints'} " \
                      "(train.save_every and a Ctrl-C or SIGTERM during RL write them)"
    (out / "checkpoints" / "step_000003").mkdir(parents=True)
    (out / "checkpoints" / "step_000003" / "COMPLETE").write_text("step_000003\n")
    (out / "run_config.json").write_text(json.dumps(to_dict(load_config("examples/tiny_arith_grpo.toml"))))
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out), "--resume", "learner.lr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rlvr: resume error: --resume: the config differs from") and "learner.lr: 0.0001 -> 1.0" in err[-1]
    assert not (out / "run.log").exists()  # nothing started


def test_a_finished_runs_folder_is_refused_and_resume_needs_no_config(capsys, tmp_path):
    """Issue 20's acceptance, up to where Ray would start: a second run into a finished run's folder exits non-zero
    without touching it; `--resume` reads DIR/run_config.json, so its overrides need not be retyped."""
    out = tmp_path / "run"
    finished = load_config("examples/tiny_arith_grpo.toml", ["eval.size=8", "sft.steps=20"])
    (out / "checkpoints" / "step_000006").mkdir(parents=True)
    (out / "checkpoints" / "step_000006" / "COMPLETE").write_text("step_000006\n")
    (out / "run_config.json").write_text(json.dumps(to_dict(finished)))
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(7)))
    before = (out / "metrics.jsonl").read_text(), (out / "metrics.jsonl").stat().st_mtime_ns
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rlvr: output-dir error: {out} holds a run (metrics.jsonl, run_config.json, checkpoints/): pass --resume "
        "to continue it or --overwrite to replace it (or another --output-dir)")
    assert ((out / "metrics.jsonl").read_text(), (out / "metrics.jsonl").stat().st_mtime_ns) == before
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "metrics.jsonl", "run_config.json"]  # not even a run.log
    # --resume without CONFIG: the run's own config; an override that changes the run is still named
    assert main(["train", "--output-dir", str(out), "--resume", "sft.steps=400", "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("sft.steps: 20 -> 400")
    assert main(["train", "--output-dir", str(out), "--resume=auto", "--dry-run", "train.steps=200"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == to_dict(load_config(out / "run_config.json", ["train.steps=200"]))
    assert (printed["eval"]["size"], printed["train"]["steps"]) == (8, 200)
    assert main(["train", "--output-dir", str(out), "--overwrite", "--dry-run"]) == 2  # CONFIG is needed afresh
    assert "no CONFIG given" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out), "--resume", "--overwrite"])
    assert ((out / "metrics.jsonl").read_text(), (out / "metrics.jsonl").stat().st_mtime_ns) == before


def test_config_error_is_one_line_naming_key_and_file(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[algo]\ngroup_sise = 4\n")
    assert main(["train", str(bad), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr: config error:") and "algo.group_sise" in err and "bad.toml" in err


def test_missing_data_file_fails_before_anything_starts(capsys, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    code = main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path / "run"), f"data.source={missing}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr: data error:") and str(missing) in err


def test_stray_arguments_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path), "--bogus"])


@pytest.mark.parametrize(("override", "names"), [
    ('reward.terms=[{name="reasoning_gim"}]', "unknown reward 'reasoning_gim'"),
    ('reward.terms=[{name="my_plugins.rewards:score"}]', "cannot import 'my_plugins.rewards'"),
    ('reward.terms=[{name="math", kwargs={strictt=true}}]', "reward 'math': bad kwargs ['strictt']"),
])
def test_dry_run_rejects_a_bad_reward_in_seconds_without_starting_anything(override, names, tmp_path):
    # A fresh process, as a user runs it: the time includes every import, and Ray must stay down.
    out = tmp_path / "run"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rlvr.cli", "train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out),
         "--dry-run", override], capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 2 and elapsed < 15, (done.returncode, elapsed)
    (line,) = done.stderr.splitlines()
    assert line.startswith("rlvr: reward error: reward.terms[0]") and names in line
    assert done.stdout == "" and not out.exists()
    assert "ray" not in done.stderr.lower()


def test_negative_max_steps_and_unknown_override_keys(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path), "--max-steps", "-1"])
    assert "--max-steps: must be >= 0" in capsys.readouterr().err
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path), "algo.group_sise=4"]) == 2
    assert "(did you mean 'algo.group_size'?)" in capsys.readouterr().err
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path), "--dry-run",
                 "algo.group_size"]) == 2
    assert "override 'algo.group_size' has no '=': write key=value" in capsys.readouterr().err


def test_dry_run_prints_reward_terms_and_warnings(capsys, tmp_path):
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path / "run"), "--dry-run",
                 "rollout.max_num_seqs=64"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("rlvr: warning: rollout.max_num_seqs = 64 is below the 512 sequences")
    assert err[1] == "reward terms: reasoning_gym x1 (rlvr.rewards.reasoning_gym:reasoning_gym_score)"


def test_dry_run_judges_bf16_by_this_machines_cpu(capsys, tmp_path):
    from rlvr.runtime.precision import Hardware

    native = Hardware.probe(load_config("examples/tiny_arith_grpo.toml")).cpu_bf16  # False on an AVX2-only CPU
    done = subprocess.run(  # the real command, as a user types it
        [sys.executable, "-m", "rlvr.cli", "train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path / "a"),
         "--dry-run", "model.dtype=bfloat16"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    warned = 'rlvr: warning: model.dtype = "bfloat16" on a CPU without bf16 instructions' in done.stderr
    assert warned == (native is False), done.stderr
    assert main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path / "b"), "--dry-run",
                 "model.dtype=auto"]) == 0
    captured = capsys.readouterr()
    picked = "bfloat16" if native else "float32"
    assert json.loads(captured.out)["model"]["dtype"] == picked  # what run_config.json and --resume see
    assert f'model.dtype = "auto": {picked} (the CPU' in captured.err
