"""`reasoning_gym`: score with reasoning-gym's own scorer for the sample's source dataset.

    score = reasoning_gym.get_score_answer_fn(metadata["source_dataset"])(
        answer=<extracted answer>, entry={"question": prompt, "answer": answer, "metadata": metadata})

The answer is the completion's `<answer>...</answer>` / `\\boxed{}` / "final answer is" content, or the
whole completion stripped (a tiny model answers with the bare number). Values are in [0, 1]: some
reasoning-gym tasks give partial credit. A sample without `source_dataset` in its metadata is an error,
not a 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import reasoning_gym

from rlvr.rewards.exact import answer_text
from rlvr.rewards.registry import register
from rlvr.types import Rollout


@functools.cache
def _score_fn(dataset: str) -> Callable[..., float]:
    return reasoning_gym.get_score_answer_fn(dataset)


@register("reasoning_gym")
def reasoning_gym_score(rollout: Rollout) -> float:
    sample = rollout.sample
    dataset = sample.metadata.get("source_dataset")
    if not dataset:
        raise ValueError(f"sample {sample.id!r} has no metadata['source_dataset'] to pick a reasoning-gym scorer")
    question = sample.metadata.get("question", sample.prompt)  # the task's own wording, if the prompt was reworded
    entry: dict[str, Any] = {"question": question, "answer": sample.answer, "metadata": dict(sample.metadata)}
    return float(_score_fn(dataset)(answer=answer_text(rollout.completion).strip(), entry=entry))
