"""Evaluation sets by name, and the reward each kind of set is scored with by default.

    resolve_eval_set("math500")  -> EvalSet(path=".../shared/data/eval/math500.jsonl", prompt_key="problem", ...)

The named sets live in the shared data folder (`$RLVR_SHARED_DATA`, else `../shared/data` beside the
working directory or beside this checkout); their field names differ on purpose (shared/data/README.md),
so each entry records its own keys. Anything else is a file path or a "reasoning_gym:<task>" source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rlvr.data.sources import RG_PREFIX, DataError


@dataclass(frozen=True)
class EvalSet:
    path: str
    prompt_key: str
    answer_key: str
    answer_format: str = "plain"


# Minerva's and OlympiadBench's gold answers sit in a solution's \boxed{} / a rendered list; the math
# reward's gold reader (rewards/extract.py `gold_answers`) understands both.
NAMED = {
    "math500": EvalSet("eval/math500.jsonl", "problem", "answer"),
    "aime24": EvalSet("eval/aime24.jsonl", "problem", "answer"),
    "amc23": EvalSet("eval/amc23.jsonl", "problem", "answer"),
    "minerva_math": EvalSet("eval/minerva_math.jsonl", "problem", "solution"),
    "olympiadbench": EvalSet("eval/olympiadbench.jsonl", "question", "final_answer"),
    "gsm8k": EvalSet("gsm8k/test.jsonl", "question", "answer", "gsm8k"),
}


def shared_data_dir() -> Path:
    candidates = [os.environ.get("RLVR_SHARED_DATA", ""), Path.cwd().parent / "shared" / "data",
                  Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise DataError("the shared data folder was not found (set RLVR_SHARED_DATA to the folder holding eval/)")


def resolve_eval_set(data: str, prompt_key: str = "", answer_key: str = "", answer_format: str = "") -> EvalSet:
    """A named set, a reasoning-gym source or a file; explicit keys and format override a named set's."""
    base = EvalSet(str(shared_data_dir() / NAMED[data].path), NAMED[data].prompt_key, NAMED[data].answer_key,
                   NAMED[data].answer_format) if data in NAMED else EvalSet(data, "question", "answer")
    return EvalSet(base.path, prompt_key or base.prompt_key, answer_key or base.answer_key,
                   answer_format or base.answer_format)


def default_reward(data: str, answer_format: str) -> str:
    """gsm8k for GSM8K-format answers, the task's own scorer for reasoning-gym, math otherwise."""
    if answer_format == "gsm8k":
        return "gsm8k"
    return "reasoning_gym" if data.startswith(RG_PREFIX) else "math"
