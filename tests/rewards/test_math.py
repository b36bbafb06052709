"""`math` on real model outputs from ../shared/data/verifier/dev.jsonl, plus the answer forms the issue lists."""

import collections
import functools
import json
import os
from pathlib import Path

import pytest

from rlvr.rewards.extract import gold_answers
from rlvr.rewards.math import MathVerify, is_equivalent
from rlvr.types import Rollout, Sample

SHARED = Path(os.environ.get("RLVR_SHARED_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
DEV = SHARED / "verifier" / "dev.jsonl"
needs_data = pytest.mark.skipif(not DEV.exists(), reason=f"no shared data at {DEV} (set RLVR_SHARED_DATA)")


@functools.cache
def dev_rows() -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, DEV.open())}


# (dev.jsonl id, expected): real completions, chosen to cover each answer form in the file.
REAL = [
    ("gsm8k-0-6b_finetuning", False),  # "A: 26", gold 18
    ("gsm8k-0-175b_verification", True),  # "A: 18"
    ("gsm8k-1-6b_finetuning", True),
    ("gsm8k-419-175b_finetuning", True),  # "A: 3,000", gold 3000
    ("gsm8k-2-6b_finetuning", False),  # "A: 90,000", gold 70000
    ("gsm8k-9-6b_finetuning", False),  # "A: 10.95", gold 460
    ("gsm8k-13-6b_finetuning", False),  # "A: 10.833333333333332", gold 18
    ("gsm8k-5-175b_finetuning", False),  # truncated mid-sentence, no final answer
    ("gsm8k-48-175b_finetuning", False),  # degenerate "3333...", no final answer
    ("math-1-0", True),  # \boxed{\frac{1}{9}}
    ("math-6-0", False),  # \boxed{\frac{5}{16}}, gold \frac{3}{8}
    ("math-9-0", True),  # negative integer
    ("math-18-0", True),  # \boxed{10} meters
    ("math-22-0", True),  # expression 4a-2
    ("math-24-0", True),  # mixed number "12 \frac{3}{5}" vs "12\frac{3}{5}"
    ("math-33-0", True),  # 4t
    ("math-37-0", False),  # mixed number 1\frac{8}{91}, gold 1\frac{1}{10}
    ("math-43-0", True),  # 7\pi
    ("math-17-0", True),  # 6290000
    ("math-17-2", False),  # 6287000: rounded to the wrong place
]

# Labels that are wrong although the verifier agrees with them; the verifier is right to follow the gold.
# (id, reason). The dev set has no row where the verifier and a correct label disagree.
SUSPECT_LABELS = [
    (f"math-3-{i}", "gold '4:30p..' is a mangled '4:30 p.m.': the response (4:30 p.m.) is right, the label "
     "False only reflects the broken gold; with the gold repaired the verifier says True")
    for i in range(8)
]


def rollout(completion: str, answer: str) -> Rollout:
    return Rollout(Sample("t", "q", answer), completion, "stop", (), (), (), 0)


@needs_data
@pytest.mark.parametrize(("row_id", "expected"), REAL)
def test_real_completions(row_id, expected):
    row = dev_rows()[row_id]
    assert row["label"] == expected
    assert MathVerify()(rollout(row["response"], row["gold"])) == float(expected)


@needs_data
def test_agreement_with_labels_per_source():
    seen, agree, disagreements = collections.Counter(), collections.Counter(), []
    for row in dev_rows().values():
        got = is_equivalent(row["response"], row["gold"])
        seen[row["source"]] += 1
        agree[row["source"]] += got == row["label"]
        if got != row["label"]:
            disagreements.append(row["id"])
    assert all(agree[s] / seen[s] >= 0.995 for s in seen), {s: agree[s] / seen[s] for s in seen}
    assert disagreements == []  # any new one: look at it, then fix the checker or list the label with a reason


@needs_data
@pytest.mark.parametrize(("row_id", "reason"), SUSPECT_LABELS)
def test_suspect_labels(row_id, reason):
    row = dev_rows()[row_id]
    assert row["gold"] == "4:30p.." and not row["label"]
    assert not is_equivalent(row["response"], row["gold"])
    assert is_equivalent(row["response"], "4:30 p.m.")


# (completion, gold, expected): the answer and gold forms the issue asks for.
FORMS = [
    (r"so \boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),  # radicals
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", True),  # gold parsed as one expression, not [2, '2']
    (r"\boxed{\dfrac{7}{20}}", "0.35", True),  # fraction vs decimal
    (r"\boxed{(1, 2]}", "(1,2]", True),  # interval
    (r"\boxed{[1,9)}", "[1,9]", False),
    (r"\boxed{(3, -1)}", "(3,-1)", True),  # tuple
    (r"\boxed{\{2, 1\}}", r"\{1,2\}", True),  # set
    (r"\boxed{50\%}", "50", True),  # percentage
    (r"\boxed{5 \text{ cm}}", "5", True),  # units
    (r"\boxed{4:30 \text{ p.m.}}", "4:30 p.m.", True),  # text
    (r"\boxed{10{,}000}", "10000", True),  # the grader bug the data README mentions
    (r"\fbox{42}", "42", True),
    (r"nested \boxed{\frac{1}{\sqrt{2}}} done", r"\frac{\sqrt{2}}{2}", True),
    ("The final answer is 7. I hope it is correct.", "7", True),
    ("<answer>42</answer>", "42", True),
    (r"\boxed{27}", "27.0", True),  # AMC golds are floats
    ("Janet makes 9 * 2 = 18 dollars.\n#### 18", "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", True),  # GSM8K gold
    (r"\boxed{2}", "['$2$', '$3$']", True),  # OlympiadBench list gold
    (r"\boxed{-3}", "3", False),
    ("", "3", False),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), FORMS)
def test_answer_forms(completion, gold, expected):
    assert is_equivalent(completion, gold) == expected


# (file, answer key): each data set's own answer field scores a completion that boxes its answer.
# An answer spread over several boxes, in the response and in the gold: (completion, gold, expected).
SEVERAL_BOXES = [
    (r"so \boxed{(3,4)}, \boxed{(4,3)}", "(3,4),(4,3)", True),
    (r"so \boxed{(4,3)}, \boxed{(3,4)}", "(3,4),(4,3)", True),  # a set: order is free
    (r"$\boxed{a=7} \quad\text{and}\quad \boxed{b=-1}$", "a=7, b=-1", True),
    (r"$\boxed{a=7} \quad\text{and}\quad \boxed{b=-1}$", "7, -1", True),
    (r"$\boxed{a=7} \quad\text{and}\quad \boxed{b=-1}$", "a=7, b=1", False),
    (r"The roots are $\boxed{2}$ and $\boxed{3}$.", "2, 3", True),
    (r"The roots are $\boxed{2}$ and $\boxed{3}$.", "3", False),  # half the answer is not the answer
    (r"$x=\boxed{-1}$ or $x=\boxed{4}$", "-1, 4", True),
    (r"The final answer is $2, 3$.", r"$\boxed{2}$ and $\boxed{3}$", True),  # the gold has the boxes
    (r"\boxed{3}", r"$\boxed{2}$ and $\boxed{3}$", False),
    # boxed, argued on, boxed again: the last box alone is the answer
    (r"I get \boxed{1}. Hmm, that misses a case; recounting gives \boxed{2}", "2", True),
    (r"I get \boxed{1}. Hmm, that misses a case; recounting gives \boxed{2}", "1, 2", False),
    (r"I get \boxed{1}. Hmm, that misses a case; recounting gives \boxed{2}", "1", False),
    # a later explicit statement wins over an earlier box
    (r"So \boxed{3}. Wait, I dropped a term: the final answer is 7.", "7", True),
    (r"So \boxed{3}. Wait, I dropped a term: the final answer is 7.", "3", False),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), SEVERAL_BOXES)
def test_several_boxes(completion, gold, expected):
    assert is_equivalent(completion, gold) is expected


DATASETS = [
    ("gsm8k/test.jsonl", "answer"),  # worked solution ending in "#### n"
    ("math/train.jsonl", "answer"),  # LaTeX
    ("eval/math500.jsonl", "answer"),
    ("eval/aime24.jsonl", "answer"),
    ("eval/amc23.jsonl", "answer"),  # floats such as 27.0
    ("eval/minerva_math.jsonl", "solution"),  # the answer is boxed inside the solution
    ("eval/olympiadbench.jsonl", "final_answer"),  # a list rendered as a string
]


@pytest.mark.parametrize(("relative", "key"), DATASETS)
def test_each_data_set_answer_field_scores(relative, key):
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"no shared data at {path} (set RLVR_SHARED_DATA)")
    rows = [json.loads(line) for _, line in zip(range(20), path.open())]
    for row in rows:
        gold = str(row[key])
        answer = gold_answers(gold)[0].strip("$")
        answer = str(int(float(answer))) if relative.endswith("amc23.jsonl") else answer
        assert is_equivalent(rf"so the answer is $\boxed{{{answer}}}$.", gold), (relative, gold)
        assert not is_equivalent(r"so the answer is $\boxed{123456789}$.", gold), (relative, gold)
