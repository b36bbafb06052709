"""Preflight: every mistake the config can show fails in seconds, before Ray or vLLM start."""

import json
import re
from pathlib import Path

import pytest

from rlvr.config import load_config
from rlvr.preflight import PreflightError, describe_terms, preflight

EXAMPLE = "examples/tiny_arith_grpo.toml"


@pytest.fixture(autouse=True)
def plugins_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.parametrize(("override", "kind", "message"), [
    ('reward.terms=[{name="reasoning_gim"}]', "reward", "reward.terms[0] (name = 'reasoning_gim'): unknown reward"),
    ('reward.terms=[{name="no_such_module:f"}]', "reward", "cannot import 'no_such_module'"),
    ('reward.terms=[{name="reward_plugins:nothing_here"}]', "reward", "has no attribute 'nothing_here'"),
    ('reward.terms=[{name="math", kwargs={strictt=true}}]', "reward", "bad kwargs ['strictt']"),
    ('reward.terms=[{name="exact", kwargs={bogus=1}}]', "reward", "bad kwargs ['bogus']"),
    ('reward.terms=[{name="reward_plugins:NeedsThreshold"}]', "reward", "missing 1 required positional argument"),
    ('reward.terms=[{name="math"}, {name="math"}]', "reward", "label 'math' is duplicated"),
    ('reward.correctness=mth', "reward", "reward.correctness = 'mth' is not a per-rollout term"),
    ("train.steps=-1", "config", "train.steps = -1: must be >= 0"),
    ("data.source=/nowhere/rows.jsonl", "data", "data.source: data file not found: /nowhere/rows.jsonl"),
    ("data.source=reasoning_gym:no_such_task", "data", "no_such_task"),
    ("data.prompt_key=expr", "data", "data.prompt_key = 'expr'"),
])
def test_each_mistake_is_one_line_naming_what_is_wrong(override, kind, message):
    cfg = load_config(EXAMPLE, [override])
    with pytest.raises(PreflightError) as info:
        preflight(cfg)
    assert info.value.kind == kind and message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_plugin_module_that_raises_on_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-written plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(EXAMPLE, ['reward.terms=[{name="broken_plugin:score"}]'])
    with pytest.raises(PreflightError, match=r"'broken_plugin:score'.*RuntimeError while loading it: half-written plugin"):
        preflight(cfg)


def test_file_source_rows_need_the_configured_keys(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"problem": "1+1", "solution": "2"}) + "\n")
    ok = load_config(EXAMPLE, [f"data.source={rows}", "data.prompt_key=problem", "data.answer_key=solution"])
    assert preflight(ok) == []
    bad = load_config(EXAMPLE, [f"data.source={rows}", "data.prompt_key=problem", "data.answer_key=answer"])
    with pytest.raises(PreflightError, match=rf"{rows}:1: row has no answer key \(data.answer_key\) 'answer'"):
        preflight(bad)
    gsm8k = load_config(EXAMPLE, [f"data.source={rows}", "data.prompt_key=problem", "data.answer_key=solution",
                                  "data.answer_format=gsm8k"])
    with pytest.raises(PreflightError, match="no '####' marker"):
        preflight(gsm8k)


def test_speed_only_mismatches_warn_and_pass():
    cfg = load_config(EXAMPLE, ["rollout.max_num_seqs=100"])  # 64 prompts x 8 = 512 sequences per step
    (warning,) = preflight(cfg)
    assert warning.startswith("rollout.max_num_seqs = 100 is below the 512 sequences") and "vLLM queues" in warning
    assert preflight(load_config(EXAMPLE)) == []


def test_reward_terms_line_names_weights_and_origins():
    cfg = load_config(EXAMPLE, ['reward.terms=[{name="math"}, {name="reward_plugins:length", weight=0.1}]'])
    assert describe_terms(cfg.reward) == (
        "reward terms: math x1 (rlvr.rewards.math:MathVerify), length x0.1 (reward_plugins:length)"
    )


@pytest.mark.parametrize("override,message", [
    ("distill.teacher=builtin:no-such-teacher", "distill.teacher = 'builtin:no-such-teacher': unknown builtin model"),
    ("critic.path=/nonexistent/critic", "critic.path = '/nonexistent/critic': no such folder"),
    ("model.path=./not-here", f"model.path = '{Path.cwd() / 'not-here'}': no such folder"),  # resolved as typed
])
def test_model_paths_are_checked_before_anything_starts(override, message):
    with pytest.raises(PreflightError, match=re.escape(message)):
        preflight(load_config(EXAMPLE, [override]), check_data=False)


def test_a_taken_dashboard_port_is_named_before_ray_starts(monkeypatch):
    import socket

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PreflightError, match=rf"cluster.dashboard_port = {port}: 127.0.0.1:{port} is taken .*; 0 takes"):
            preflight(load_config(EXAMPLE, [f"cluster.dashboard_port={port}"]))
        assert preflight(load_config(EXAMPLE, [f"cluster.dashboard_port={port}", "cluster.dashboard=false"])) == []
        assert preflight(load_config(EXAMPLE)) == []  # 0: Ray takes 8265 or the next free port


def test_bf16_on_a_cpu_without_bf16_instructions_is_a_warning_with_its_cost():
    from rlvr.runtime.precision import Hardware

    cfg = load_config(EXAMPLE, ["model.dtype=bfloat16"])
    [warning] = preflight(cfg, check_data=False, hardware=Hardware(frozenset({"avx", "avx2"}), None))
    assert warning.startswith('model.dtype = "bfloat16" on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16')
    assert "302 s in bf16 against 24 s in fp32" in warning and '"float32" (or "auto")' in warning
    assert preflight(cfg, check_data=False, hardware=Hardware(frozenset({"avx2", "avx512_bf16"}), None)) == []
