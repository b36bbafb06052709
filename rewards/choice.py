r"""`choice`: 1.0 when the completion picks the gold letter of a multiple-choice question, else 0.0.

    choice(completion="... so the answer is (C).", answer="C")          == 1.0
    choice(completion=r"\boxed{\text{(B)}}", answer="(B)")              == 1.0
    choice(completion="Answer: D", answer="B")                           == 0.0

The pick is the first choice letter standing alone ("(B)", "B.", "B)", "B") inside the marked answer
(`<answer>`, `\boxed{}`, "the final answer is"), else after the last "answer is" / "answer:", else a
completion that is just a letter. No pick scores 0.0. `letters` sets the valid choices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvr.rewards.extract import final_answer
from rlvr.rewards.registry import register
from rlvr.types import Rollout


def pick(text: str, letters: str) -> str | None:
    alone = re.compile(rf"(?<![A-Za-z])\(?([{letters}])\)?(?![A-Za-z])")
    marked = final_answer(text)
    if marked is not None:
        found = alone.search(marked.replace("\\text", ""))
        if found:
            return found.group(1)
    after = re.findall(rf"answer(?: is)?\s*[:：]?\s*\**\(?([{letters}])\)?(?![A-Za-z])", text, re.IGNORECASE)
    if after:
        return after[-1]
    bare = text.strip().strip("().*").strip()
    return bare if len(bare) == 1 and bare in letters else None


@register("choice")
@dataclass(frozen=True)
class MultipleChoice:
    letters: str = "ABCD"

    def __call__(self, rollout: Rollout) -> float:
        gold = pick(rollout.sample.answer, self.letters)
        if gold is None:
            raise ValueError(f"sample {rollout.sample.id!r}: gold {rollout.sample.answer!r} is not in {self.letters}")
        return float(pick(rollout.completion, self.letters) == gold)
