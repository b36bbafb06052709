"""`rlvr verify`: run a reward over saved rollouts (a JSONL file), for authoring and checking rewards.

    rlvr verify ../shared/data/verifier/dev.jsonl --reward math --answer-key gold --response-key response \\
        --label-key label --by source --output scored.jsonl

Each row becomes a rollout (completion = row[response_key], answer = row[answer_key], metadata = the
row, or row["metadata"] when that is a dict; token ids or a count from --tokens-key for length terms,
finish_reason from --finish-key) and is scored in the same isolated worker pool as in training, with
the same hard deadline. A field the rows do not provide is unknown, not 0: a reward that reads
`num_tokens` without --tokens-key (or `finish_reason` without the field) gets an error saying so. The output adds `reward` (null when the call failed), `status`
(ok / timeout / error / crash), `error` and the reward's sub-terms (`parts`, if any) to each row.
The summary gives the mean reward, counts per status, the first message of each failure kind, and
rows/s; with --label-key, the agreement of `reward > 0.5` with the label (per --by value). The exit
code is 1 when any row raised or crashed (a reward bug: a stderr line says how many); a timeout is a
result, not an error.
--workers 0 runs the reward in this process without a deadline, e.g. under a debugger.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from rlvr.config import RewardTermConfig
from rlvr.rewards import registry
from rlvr.rewards.pool import run_call
from rlvr.scoring.service import Scorer
from rlvr.types import Rollout, Sample, TermResult, Unknown

_BLOCK = 4096  # rows read, scored and written at a time: bounded memory, workers busy
_PROMPT_KEYS = ("prompt", "problem", "question")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlvr verify", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="JSONL file of saved rollouts")
    p.add_argument("--reward", required=True, help="a registered reward, entry point or package.module:function")
    p.add_argument("--kwargs", type=json.loads, default={}, help='reward arguments as JSON, e.g. \'{"strict": false}\'')
    p.add_argument("--answer-key", required=True, help="field holding the ground truth")
    p.add_argument("--response-key", required=True, help="field holding the model's completion")
    p.add_argument("--prompt-key", default="", help=f"field holding the prompt (default: first of {_PROMPT_KEYS})")
    p.add_argument("--tokens-key", default="",
                   help="field holding the completion's token ids or token count (without it num_tokens is unknown)")
    p.add_argument("--finish-key", default="finish_reason",
                   help="field holding the finish reason, 'stop' or 'length' (where absent, finish_reason is unknown)")
    p.add_argument("--output", type=Path, help="write the rows with reward, status and error added")
    p.add_argument("--workers", type=int, default=2,
                   help="scoring processes (0: in this process, no deadline) (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="hard wall-clock deadline per call, seconds (default: %(default)s)")
    p.add_argument("--label-key", default="", help="boolean field to report agreement with")
    p.add_argument("--by", default="", help="field to break the agreement down by, e.g. source")
    return p.parse_args(argv)


def to_rollout(row: dict[str, Any], index: int, args: argparse.Namespace) -> Rollout:
    try:
        completion, answer = row[args.response_key], row[args.answer_key]
    except KeyError as e:
        raise SystemExit(f"rlvr verify: row {index} of {args.input} has no key {e.args[0]!r}") from None
    prompt_key = args.prompt_key or next((k for k in _PROMPT_KEYS if k in row), "")
    metadata = row["metadata"] if isinstance(row.get("metadata"), dict) else row
    sample = Sample(id=str(row.get("id", index)), prompt=str(row.get(prompt_key, "")), answer=str(answer),
                    metadata=metadata)
    ids: Any = Unknown("num_tokens", "the rows give no token count; pass --tokens-key FIELD (token ids or a count)")
    if args.tokens_key:
        if args.tokens_key not in row:
            raise SystemExit(f"rlvr verify: row {index} of {args.input} has no key {args.tokens_key!r} (--tokens-key)")
        tokens = row[args.tokens_key]
        ids = tuple(range(tokens)) if isinstance(tokens, int) else tuple(tokens)  # a count: placeholder ids
    finish: Any = row.get(args.finish_key)
    if finish not in ("stop", "length"):
        finish = Unknown("finish_reason", f"the row has no 'stop'/'length' in {args.finish_key!r}; pass --finish-key FIELD")
    return Rollout(sample, str(completion), finish, ids, (), (), 0)


def read_blocks(handle: TextIO) -> Iterator[list[dict[str, Any]]]:
    rows = (json.loads(line) for line in handle if line.strip())
    while block := list(itertools.islice(rows, _BLOCK)):
        yield block


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.input.is_file():
        print(f"rlvr verify: input file not found: {args.input}", file=sys.stderr)
        return 2
    term = RewardTermConfig(args.reward, kwargs=args.kwargs)
    try:
        fn = registry.resolve(term.name, term.kwargs)
    except (KeyError, TypeError, ValueError) as e:
        print(f"rlvr verify: {e}", file=sys.stderr)
        return 2
    if registry.is_group_reward(fn):
        print(f"rlvr verify: {args.reward!r} is a group shaper; verify scores rows one by one", file=sys.stderr)
        return 2
    start = time.monotonic()
    scorer = Scorer([term], workers=args.workers, timeout_s=args.timeout) if args.workers > 0 else None
    if scorer:
        scorer.wait_ready()
    startup = time.monotonic() - start
    statuses: collections.Counter[str] = collections.Counter()
    agree: collections.Counter[str] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()
    rewards: list[float] = []
    first_failure: dict[str, str] = {}  # status -> "row N (id X): message"
    out = args.output.open("w") if args.output else None
    try:
        with args.input.open() as handle:
            for block in read_blocks(handle):
                total_before = sum(statuses.values())
                rollouts = [to_rollout(row, total_before + i, args) for i, row in enumerate(block)]
                if scorer is None:
                    results = [_in_process(fn, r) for r in rollouts]
                else:
                    results = [_term_and_parts(g[0].terms, scorer.terms[0].label)
                               for g in scorer.score_groups([[r] for r in rollouts])]
                for i, (row, (result, parts)) in enumerate(zip(block, results)):
                    statuses[result.status] += 1
                    if result.status != "ok" and result.status not in first_failure:
                        first_failure[result.status] = f"row {total_before + i} (id {rollouts[i].sample.id!r}): {result.error}"
                    if result.status == "ok":
                        rewards.append(result.value)
                    if args.label_key and result.status == "ok":
                        group = str(row.get(args.by, "all")) if args.by else "all"
                        seen[group] += 1
                        agree[group] += (result.value > 0.5) == bool(row[args.label_key])
                    if out:
                        ok = result.status == "ok"
                        out.write(json.dumps(row | {"reward": result.value if ok else None, "status": result.status,
                                                    "error": result.error} | ({"parts": parts} if parts else {}))
                                  + "\n")
    finally:
        if out:
            out.close()
        if scorer:
            scorer.close()
    elapsed = time.monotonic() - start - startup
    total = sum(statuses.values())
    print(f"rows: {total}  scored in {elapsed:.2f} s: {total / max(elapsed, 1e-9):.0f} rows/s "
          f"(workers={args.workers}, timeout={args.timeout:g} s; worker start-up {startup:.1f} s before that)")
    mean = sum(rewards) / len(rewards) if rewards else math.nan
    print(f"mean reward: {mean:.4f}  " + "  ".join(f"{s}: {statuses[s]}" for s in ("ok", "timeout", "error", "crash")))
    for status, where in first_failure.items():
        print(f"  first {status}: {where}")
    for group in sorted(seen):
        share = agree[group] / seen[group]
        print(f"agreement with {args.label_key!r} [{group}]: {share:.2%} ({agree[group]}/{seen[group]})")
    failed = statuses["error"] + statuses["crash"]
    if failed:  # a bug in the reward; a timeout is a result (a row too costly to check), counted above
        print(f"rlvr verify: the reward raised or crashed on {failed} of {total} rows "
              f"(error: {statuses['error']}, crash: {statuses['crash']}; first messages above)", file=sys.stderr)
        return 1
    return 0


def _in_process(fn: Any, rollout: Rollout) -> tuple[TermResult, dict[str, float]]:
    status, value, parts, error, seconds = run_call(fn, rollout)
    return TermResult(value, status, error, seconds), parts  # type: ignore[arg-type]


def _term_and_parts(terms: Mapping[str, TermResult], label: str) -> tuple[TermResult, dict[str, float]]:
    prefix = label + "/"
    return terms[label], {k[len(prefix):]: r.value for k, r in terms.items() if k.startswith(prefix)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
