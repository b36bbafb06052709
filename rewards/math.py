r"""`math`: 1.0 when the completion's final answer is mathematically equal to the gold answer, else 0.0.

    math(completion=r"... so the area is \boxed{\dfrac{7}{20}}.", answer="0.35")   == 1.0
    math(completion="... = 6 + 12 = 18\nA: 18", answer="... #### 18")            == 1.0
    math(completion=r"\boxed{(1, 2]}", answer=r"(1,2]")                          == 1.0

1. Gold: `gold_answers` reads a plain value, a float such as `27.0`, GSM8K's `#### 18`, a solution
   with `\boxed{}` inside, or a rendered list (several golds; any may match).
2. Prediction: the last `<answer>`, `\boxed{}`/`\fbox{}`, "the final answer is", `#### n` or `A: n`
   (extract.py); without any of these, math-verify's own extraction over the whole completion.
   Adjacent boxes (`\boxed{(3,4)}, \boxed{(4,3)}`, `\boxed{2} and \boxed{3}`) are one answer, read as
   the set of their contents, in the prediction and in the gold; a box followed by more reasoning
   and another box is not (only the last counts).
3. Equality: two plain decimal numbers are compared exactly (as `Fraction`s) without sympy, the common
   case and 20x cheaper; anything else goes through math-verify (fractions, radicals, intervals,
   tuples, sets, percentages, units and text, as far as it supports them), with the gold wrapped in
   `$...$` so that `2\sqrt{2}` parses as one expression (feasibility.md Q7). Answers equal as text
   once LaTeX wrappers and spacing are dropped also match (`4:30 \text{ p.m.}` and `4:30 p.m.`).

math-verify's own `signal.alarm` timeouts are switched off (`parsing_timeout=None`,
`timeout_seconds=None`): they raise or return 0 off the main thread (verl #3407, TRL #5281). The hard
deadline comes from the reward pool, which kills a call stuck in sympy.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rlvr.rewards.extract import final_answer, gold_answers
from rlvr.rewards.registry import register
from rlvr.types import Rollout

# math-verify warns once per process that its timeouts are off; that is deliberate here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_NUMBER_RE = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")
_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())


_TEXT_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\left|\\right|[{}\s$]")


def same_text(a: str, b: str) -> bool:
    """Equal as text once LaTeX wrappers and spacing are gone ("4:30 \\text{ p.m.}" == "4:30 p.m.")."""

    def norm(text: str) -> str:
        return _SPACING_RE.sub("", _TEXT_WRAPPERS_RE.sub("", text)).rstrip(".").casefold()

    return bool(norm(a)) and norm(a) == norm(b)


def plain_number(text: str) -> Fraction | None:
    """`text` as an exact number when it is a plain decimal ("1,234", "-0.50", "$18", "18."), else None."""
    text = text.strip().replace("{,}", ",").replace("\\!", "")
    text = re.sub(r"^\\?\$|\\?\$$", "", text).strip().rstrip(".")
    if text.startswith("\\$"):
        text = text[2:]
    if not text or not _NUMBER_RE.match(text) or not any(c.isdigit() for c in text):
        return None
    return Fraction(text.replace(",", ""))


@functools.lru_cache(maxsize=4096)  # a group's G rollouts share one gold
def _parse_gold(gold: str) -> list:
    text = gold if gold.startswith("$") else f"${gold}$"
    return parse(text, extraction_config=_EXTRACTION, parsing_timeout=None)


def _parse_prediction(answer: str | None, completion: str) -> list:
    text = completion if answer is None else f"${answer}$"
    return parse(text, extraction_config=_EXTRACTION, parsing_timeout=None)


def is_equivalent(completion: str, gold: str, *, float_rounding: int = 6, strict: bool = True) -> bool:
    golds = gold_answers(gold)
    answer = final_answer(completion)
    if answer is not None:
        predicted = plain_number(answer)
        gold_numbers = [plain_number(g) for g in golds]
        if predicted is not None and all(n is not None for n in gold_numbers):
            return predicted in gold_numbers
    if answer is not None and any(same_text(answer, g) for g in golds):
        return True  # text answers math-verify cannot parse, e.g. times and names
    prediction = _parse_prediction(answer, completion)
    if not prediction and answer is not None:
        prediction = _parse_prediction(None, completion)  # the marked answer did not parse; look wider
    return any(
        verify(_parse_gold(g), prediction, float_rounding=float_rounding, strict=strict, timeout_seconds=None)
        for g in golds
    )


@register("math")
@dataclass(frozen=True)
class MathVerify:
    """Math answer equivalence (see the module docstring); `strict=False` matches sets with tuples."""

    float_rounding: int = 6
    strict: bool = True

    def __call__(self, rollout: Rollout) -> float:
        return float(is_equivalent(rollout.completion, rollout.sample.answer,
                                   float_rounding=self.float_rounding, strict=self.strict))


# Build math-verify's LaTeX parser now (~0.2 s on first use): reward workers, forked from a server
# that imports this module, inherit it instead of each paying for it inside a timed call.
is_equivalent(r"\boxed{\frac{1}{2}}", "0.5")
