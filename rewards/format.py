r"""Format checks: 1.0 when the completion has the required shape, else 0.0.

`think_format`: one `<think>...</think>` block followed by an answer, as DeepSeek-R1's format reward
(DeepSeek-R1 report, Sec. 2.2.2); with `answer_tag=True` the answer must be `<answer>...</answer>`:

    think_format(r"<think>2+2 is 4</think> \boxed{4}")                  == 1.0
    think_format("<think>2+2 is 4</think><answer>4</answer>", answer_tag=True) == 1.0
    think_format("4")                                                    == 0.0

Set `opened_in_prompt=True` when the chat template already opens `<think>` in the prompt (Qwen3,
R1-distills), so the completion starts inside the thinking.

`boxed_format`: a non-empty `\boxed{...}` (or `\fbox{...}`) with balanced braces is present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvr.rewards.extract import last_boxed
from rlvr.rewards.registry import register
from rlvr.types import Rollout

_ANSWER_RE = re.compile(r"\s*<answer>(?:(?!<answer>).)+</answer>\s*", re.DOTALL)


@register("think_format")
@dataclass(frozen=True)
class ThinkFormat:
    answer_tag: bool = False
    opened_in_prompt: bool = False

    def __call__(self, rollout: Rollout) -> float:
        text = rollout.completion if self.opened_in_prompt else rollout.completion.lstrip()
        if not self.opened_in_prompt:
            if not text.startswith("<think>"):
                return 0.0
            text = text[len("<think>") :]
        thinking, closed, answer = text.partition("</think>")
        if not closed or "<think>" in thinking or "</think>" in answer or not thinking.strip():
            return 0.0
        if self.answer_tag:
            return float(_ANSWER_RE.fullmatch(answer) is not None)
        return float(bool(answer.strip()))


@register("boxed_format")
def boxed_format(rollout: Rollout) -> float:
    return float(bool(last_boxed(rollout.completion)))
