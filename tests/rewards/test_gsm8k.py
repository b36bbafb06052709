"""`gsm8k`: (completion, answer, expected) tables, including real completions from verifier/dev.jsonl."""

import functools
import json
import os
from pathlib import Path

import pytest

from rlvr.rewards.exact import exact
from rlvr.rewards.gsm8k import gsm8k
from rlvr.types import Rollout, Sample

SHARED = Path(os.environ.get("RLVR_SHARED_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
DEV = SHARED / "verifier" / "dev.jsonl"


@functools.cache
def dev_rows() -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, DEV.open())}


def rollout(completion: str, answer: str, metadata=None, prompt: str = "q") -> Rollout:
    return Rollout(Sample("t", prompt, answer, metadata or {}), completion, "stop", (), (), (), 0)


@pytest.mark.skipif(not DEV.exists(), reason=f"no shared data at {DEV} (set RLVR_SHARED_DATA)")
@pytest.mark.parametrize("row_id", ["gsm8k-0-6b_finetuning", "gsm8k-0-175b_verification",
                                    "gsm8k-419-175b_finetuning", "gsm8k-9-6b_finetuning", "gsm8k-48-175b_finetuning"])
def test_gsm8k_and_exact_on_real_completions(row_id):
    row = dev_rows()[row_id]
    assert gsm8k(rollout(row["response"], row["gold"])) == float(row["label"])
    assert exact(rollout(row["response"], row["gold"])) == float(row["label"])


GSM8K = [
    ("So she makes 9 * 2 = $18 every day.", "Janet sells ... \n#### 18", 1.0),  # last number, gold after ####
    ("A: $18.00", "18", 1.0),
    (r"\boxed{1,234}", "1234", 1.0),
    ("#### 17\nWait, 18.", "18", 0.0),  # the marked answer wins over a later number
    ("no numbers", "18", 0.0),
]


@pytest.mark.parametrize(("completion", "answer", "expected"), GSM8K)
def test_gsm8k(completion, answer, expected):
    assert gsm8k(rollout(completion, answer)) == expected


def test_gsm8k_gold_without_number_is_an_error():
    with pytest.raises(ValueError, match="no number"):
        gsm8k(rollout("18", "unknown"))
