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


# One answer spread over several boxes: boxes separated only by punctuation, "and"/"or", spacing
# commands or a "x =" form one answer (their contents joined by ", "); anything more means the model
# boxed an attempt and then moved on, and only the last box counts.
SEVERAL_BOXES = [  # (completion, final answer)
    (r"so the pairs are \boxed{(3,4)}, \boxed{(4,3)}", "(3,4), (4,3)"),
    (r"$\boxed{a=7} \quad\text{and}\quad \boxed{b=-1}$", "a=7, b=-1"),
    (r"The roots are $\boxed{2}$ and $\boxed{3}$.", "2, 3"),
    (r"\boxed{2}, \boxed{3}, and \boxed{5}", "2, 3, 5"),
    (r"$x = \boxed{-1}$ or $x = \boxed{4}$", "-1, 4"),
    (r"\boxed{3} \text{ and } \boxed{4}", "3, 4"),
    (r"\[\boxed{1}\]\[\boxed{2}\]", "1, 2"),
    (r"\boxed{1} \\ \boxed{2}", "1, 2"),
    (r"\boxed{1};\,\boxed{2}", "1, 2"),
    (r"\boxed{5}. \boxed{5}", "5"),  # the same box twice is one value
    (r"$\boxed{1}$ \& $\boxed{2}$", "1, 2"),
    (r"$x_1 = \boxed{1}$, $x_{2} = \boxed{2}$", "1, 2"),
    (r"\boxed{A}\ \textbf{or}\ \boxed{C}", "A, C"),
    # negatives: text between the boxes makes the earlier one a superseded attempt
    (r"I get \boxed{1}. Hmm, that misses a case; recounting gives \boxed{2}", "2"),
    (r"\boxed{1} is wrong since 3 > 2, so \boxed{2}", "2"),
    (r"Part (a): \boxed{3}. Part (b): \boxed{4}", "4"),
    (r"\boxed{1} and then we check: \boxed{2}", "2"),
    # a later explicit statement wins over earlier boxes; a box inside the statement is the statement's
    (r"Maybe \boxed{3}. Checking again, the final answer is 7.", "7"),
    (r"The final answer is $\boxed{5}$. I hope it is correct.", "5"),
    (r"\boxed{5}\nThe final answer is $5$. I hope it is correct.", "$5$"),
    (r"\boxed{5}. I checked it twice, so the final answer is correct.", "5"),  # a verdict, not an answer
]


@pytest.mark.parametrize(("completion", "expected"), SEVERAL_BOXES)
def test_several_boxes_form_one_answer_only_when_adjacent(completion, expected):
    assert final_answer(completion) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    (r"The solutions are $\boxed{2}$ and $\boxed{3}$.", ["2, 3"]),
    (r"first $\boxed{1}$, but after simplifying, $\boxed{2}$", ["2"]),
])
def test_gold_with_several_boxes(answer, expected):
    assert gold_answers(answer) == expected
