"""Prompt sources: reasoning-gym tasks generated offline, and JSONL / Parquet files. All yield `Sample`s.

    splits = load_splits("reasoning_gym:chain_sum", eval_size=256)
    for step, samples_P in enumerate(PromptStream(splits.train, batch_size=16, seed=0)): ...

A reasoning-gym source is "reasoning_gym:<task>" and is generated deterministically from `seed`; each
sample keeps the entry's metadata (and its original question), which the task's own scorer needs.
A file source reads `prompt_key` and `answer_key` from every row; with answer_format = "gsm8k" the answer
is what follows GSM8K's "####" marker.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlvr.types import Sample

RG_PREFIX = "reasoning_gym:"
# reasoning-gym seeds row i with (seed + i), so other splits start far away to draw different rows.
_HELD_OUT_SEED_OFFSET = 1_000_000_007
_SFT_SEED_OFFSET = 2_000_000_014


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Splits:
    train: list[Sample]  # RL prompts
    held_out: list[Sample]  # never trained on: disjoint from train and sft prompts
    sft: list[Sample]  # cold-start SFT pairs (empty unless sft_size > 0)


def load_splits(
    source: str,
    *,
    prompt_key: str = "question",
    answer_key: str = "answer",
    answer_format: str = "plain",
    task_kwargs: Mapping[str, Any] | None = None,
    train_size: int = 50_000,
    eval_source: str = "",
    eval_size: int = 256,
    seed: int = 0,
    sft_size: int = 0,
) -> Splits:
    """RL, held-out and SFT samples; held-out prompts never occur in the other two.

    The held-out set is drawn first, as a sample of the task's own distribution, and its prompts are
    then removed from the training and SFT rows (so a small task space does not leave only the rare,
    hard prompts for evaluation). SFT pairs of a reasoning-gym task are generated from their own seed;
    those of a file source are drawn from its training rows (the file's answer is the SFT target).
    """
    read = dict(prompt_key=prompt_key, answer_key=answer_key, answer_format=answer_format)
    generated = source.startswith(RG_PREFIX)
    kwargs = task_kwargs or {}
    if generated:
        train = generate_task(source, train_size, seed, prompt_key, kwargs)
    else:
        train = load_file(source, **read)
    if eval_source.startswith(RG_PREFIX):
        held_out = generate_task(eval_source, eval_size * 2, seed + _HELD_OUT_SEED_OFFSET, prompt_key, kwargs)
    elif eval_source:
        held_out = load_file(eval_source, **read)
    elif generated:
        held_out = generate_task(source, eval_size * 2, seed + _HELD_OUT_SEED_OFFSET, prompt_key, kwargs)
    else:
        rows = list(train)
        random.Random(seed).shuffle(rows)
        held_out, train = rows[:eval_size], rows[eval_size:]
    held_out = list({s.prompt: s for s in held_out}.values())[:eval_size]  # first occurrence of each prompt
    if len(held_out) < eval_size:
        raise DataError(f"only {len(held_out)} distinct held-out prompts available (eval.size = {eval_size})")
    unseen = {s.prompt for s in held_out}
    train = [s for s in train if s.prompt not in unseen]
    if not train:
        raise DataError(f"data.source {source!r}: no training rows left after removing the held-out prompts")
    if sft_size and generated:
        sft = generate_task(source, sft_size, seed + _SFT_SEED_OFFSET, prompt_key, kwargs)
        sft = [s for s in sft if s.prompt not in unseen]
    else:
        sft = [train[i % len(train)] for i in range(sft_size)]
    return Splits(train=train, held_out=held_out, sft=sft)


def generate_task(source: str, size: int, seed: int, prompt_key: str, task_kwargs: Mapping[str, Any]) -> list[Sample]:
    """Generate `size` rows of a reasoning-gym task; prompt_key may be dotted ("metadata.expression")."""
    import reasoning_gym

    task = source.removeprefix(RG_PREFIX)
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **dict(task_kwargs))
    except Exception as e:  # reasoning-gym raises ValueError/TypeError/AssertionError for bad names or options
        raise DataError(f"data.source {source!r} with data.task_kwargs {dict(task_kwargs)}: {e}") from None
    samples = []
    for i, entry in enumerate(dataset):
        prompt = _lookup(entry, prompt_key, where=f"{source} row {i}")
        metadata = {**entry["metadata"], "question": entry["question"]}
        samples.append(Sample(id=f"{task}:{seed}:{i}", prompt=str(prompt), answer=str(entry["answer"]), metadata=metadata))
    return samples


def load_file(path: str, *, prompt_key: str, answer_key: str, answer_format: str = "plain") -> list[Sample]:
    """Read a .jsonl or .parquet file; errors name the file and line (JSONL) or row (Parquet)."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"data file not found: {file.absolute()}")
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = enumerate(pq.read_table(file).to_pylist(), start=1)
        where = "row"
    elif file.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(file)
        where = "line"
    else:
        raise DataError(f"{file}: unsupported data file type {file.suffix!r} (use .jsonl or .parquet)")
    samples = []
    for number, row in rows:
        at = f"{file}:{number}" if where == "line" else f"{file} row {number}"
        prompt = _lookup(row, prompt_key, where=at, what="prompt key")
        answer = _lookup(row, answer_key, where=at, what="answer key")
        if answer_format == "gsm8k":
            answer = _gsm8k_answer(str(answer), at)
        metadata = {k: v for k, v in row.items() if k not in (prompt_key, answer_key)}
        samples.append(Sample(id=f"{file.name}:{number}", prompt=str(prompt), answer=str(answer), metadata=metadata))
    return samples


def _jsonl_rows(file: Path) -> Iterator[tuple[int, dict]]:
    with file.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{file}:{number}: invalid JSON: {e}") from None
            if not isinstance(row, dict):
                raise DataError(f"{file}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _lookup(row: Mapping[str, Any], key: str, where: str, what: str = "key") -> Any:
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            keys = ", ".join(sorted(row)) if isinstance(row, Mapping) else "?"
            raise DataError(f"{where}: row has no {what} {key!r} (its keys: {keys})")
        node = node[part]
    return node


def _gsm8k_answer(solution: str, where: str) -> str:
    if "####" not in solution:
        raise DataError(f"{where}: answer has no '####' marker (data.answer_format = 'gsm8k')")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def render_prompt(sample: Sample, template: str) -> str:
    """Apply data.prompt_template; "{prompt}" is replaced literally, so LaTeX braces need no escaping."""
    return template.replace("{prompt}", sample.prompt)


def chat_prompt_ids(tokenizer: Any, sample: Sample, template: str = "{prompt}", system_prompt: str = "") -> list[int]:
    """The token ids the policy sees before its answer: the chat template applied to the rendered prompt.

    Rollout workers and the learner's SFT stage both call this, so they condition on identical prompts.
    """
    messages = [{"role": "user", "content": render_prompt(sample, template)}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


class PromptSource(Protocol):
    """Where a step's prompts come from: `PromptStream` here, or a curriculum (rlvr/data/curriculum.py)."""

    def __next__(self) -> list[Sample]: ...

    @property
    def state(self) -> Mapping[str, int]: ...

    def restore(self, state: Mapping[str, int]) -> None: ...


@dataclass
class PromptStream:
    """Endless batches of P prompts, reshuffled each epoch; `state` makes it resumable from a checkpoint."""

    samples: list[Sample]
    batch_size: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size > len(self.samples):
            raise DataError(f"data.batch_size {self.batch_size} exceeds the {len(self.samples)} training prompts")
        self._order = self._shuffled(self.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.samples)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def __iter__(self) -> Iterator[list[Sample]]:
        return self

    def __next__(self) -> list[Sample]:
        if self.position + self.batch_size > len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._shuffled(self.epoch)
        idx = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return [self.samples[i] for i in idx]

    @property
    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffled(self.epoch)
