"""Answer extraction from completions and gold fields."""

import pytest

from rlvr.rewards.extract import final_answer, gold_answers, last_boxed

COMPLETIONS = [  # (completion, final answer)
    (r"first \boxed{1}, then \boxed{\frac{a}{b^{2}}}.", r"\frac{a}{b^{2}}"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5$ done", "5"),
    (r"truncated \boxed{3} then \boxed{\frac{1}{", "3"),  # an unbalanced last box falls back to the earlier one
    ("<think>maybe 4</think><answer>5</answer>", "5"),
    (r"<answer>the area is \boxed{6}</answer>", "6"),
    ("The final answer is $12$. I hope it is correct.", "$12$"),
    ("18 - 3 = 15\n#### 15", "15"),
    ("= 26\nA: 26", "26"),
    ("no marker here 42", None),
]


@pytest.mark.parametrize(("completion", "expected"), COMPLETIONS)
def test_final_answer(completion, expected):
    assert final_answer(completion) == expected


GOLDS = [  # (answer field, gold answers)
    ("18", ["18"]),
    ("27.0", ["27.0"]),
    ("She makes 9 * 2 = $18.\n#### 18", ["18"]),
    (r"so $s = \boxed{1.6}$ cm", ["1.6"]),
    ("['$2$', '$3$']", ["$2$", "$3$"]),
    ("[1,9]", ["[1,9]"]),  # an interval, not a list
]


@pytest.mark.parametrize(("answer", "expected"), GOLDS)
def test_gold_answers(answer, expected):
    assert gold_answers(answer) == expected


def test_last_boxed_without_box():
    assert last_boxed("no box") is None
