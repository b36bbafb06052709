r"""`exact`: 1.0 when the completion's answer equals the sample's answer after normalisation, else 0.0.

The answer is the completion's marked final answer (`<answer>`, `\boxed{}`, "final answer is", `####`,
`A:`; see extract.py), or the whole completion when it has none, as a tiny model answering with a
bare number does. Normalisation: surrounding whitespace, `$` and a trailing period are dropped, inner
whitespace collapsed, case folded, thousands separators removed from numbers:

    exact(completion=" 1,234.", answer="1234") == 1.0
    exact(completion="<answer>Paris</answer>", answer="paris") == 1.0
"""

from __future__ import annotations

import re

from rlvr.rewards.extract import final_answer
from rlvr.rewards.registry import register
from rlvr.types import Rollout

_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def normalize(text: str) -> str:
    text = " ".join(text.split()).strip("$ ").rstrip(".").strip().casefold()
    if _THOUSANDS_RE.match(text):
        text = text.replace(",", "")
    return text


def answer_text(completion: str) -> str:
    """The marked final answer of a completion, or the whole completion when none is marked."""
    found = final_answer(completion)
    return completion if found is None else found


@register("exact")
def exact(rollout: Rollout) -> float:
    return float(normalize(answer_text(rollout.completion)) == normalize(rollout.sample.answer))
