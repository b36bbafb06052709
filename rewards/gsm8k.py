r"""`gsm8k`: 1.0 when the completion's final number equals the gold number, else 0.0.

    gsm8k(completion="... 9 * 2 = 18\n#### 18", answer="Janet sells ... #### 18")  == 1.0
    gsm8k(completion="She makes $18.00 every day.", answer="18")                    == 1.0

The official grader (openai/grade-school-math, `grade_school_math/dataset.py`) reads the number after
`#### ` on both sides and compares the strings with commas removed. Deviations: the completion's
number is the last number of its marked answer (`#### n`, `A: n`, `\boxed{n}`, "the final answer is
n", `<answer>n</answer>`) or, with no marker, its last number; numbers are compared exactly as
fractions, so `18.00`, `$18` and `18` agree.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rlvr.rewards.extract import final_answer, gold_answers
from rlvr.rewards.registry import register
from rlvr.types import Rollout

_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> Fraction | None:
    numbers = _NUMBER_RE.findall(text.replace("{,}", ","))
    return Fraction(numbers[-1].replace(",", "")) if numbers else None


@register("gsm8k")
def gsm8k(rollout: Rollout) -> float:
    gold = last_number(gold_answers(rollout.sample.answer)[0])
    if gold is None:
        raise ValueError(f"sample {rollout.sample.id!r}: no number in the gold answer {rollout.sample.answer[-80:]!r}")
    marked = final_answer(rollout.completion)
    predicted = last_number(rollout.completion if marked is None else marked)
    return float(predicted == gold)
