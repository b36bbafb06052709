"""Benchmark the math verifier: agreement with labels, rows/s, and behaviour on adversarial inputs.

    python benchmarks/verifier.py [--data ../shared/data/verifier/dev.jsonl] [--workers 2] [--repeats 3]

1. Agreement of `math` with `label` per `source`, listing every disagreement.
2. Rows/s: plain math-verify in one process (parse + verify, the baseline the issue quotes), our
   verifier in one process, and through `rlvr verify` (a worker pool with a hard deadline per call).
3. Adversarial: a response that makes sympy hang (killed at the deadline, marked `timeout`, service
   keeps serving), a plugin that raises (`error`), a plugin that kills its own process (`crash`,
   worker replaced).
The machine may be shared: numbers are noisy, so it repeats the throughput runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import time
from pathlib import Path

SHARED = Path(os.environ.get("RLVR_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))
HANG = r"The answer is \boxed{9^{9^{9^{9}}}}"


def raises(rollout) -> float:  # referenced as "verifier:raises": workers import this file as a module
    raise RuntimeError("a bug in a reward plugin")


def exits(rollout) -> float:
    os._exit(9)


def agreement(rows: list[dict]) -> None:
    from rlvr.rewards.math import is_equivalent

    seen, agree, wrong = collections.Counter(), collections.Counter(), []
    for row in rows:
        got = is_equivalent(row["response"], row["gold"])
        seen[row["source"]] += 1
        agree[row["source"]] += got == row["label"]
        if got != row["label"]:
            wrong.append((row["id"], row["gold"], row["label"], got, row["response"][-120:]))
    for source in sorted(seen):
        print(f"agreement [{source}]: {agree[source] / seen[source]:.2%} ({agree[source]}/{seen[source]})")
    for row_id, gold, label, got, tail in wrong:
        print(f"  disagreement {row_id}: gold={gold!r} label={label} verifier={got} ...{tail!r}")


def plain_math_verify(rows: list[dict]) -> float:
    from math_verify import parse, verify

    start = time.monotonic()
    for row in rows:
        verify(parse(f"${row['gold']}$", parsing_timeout=None), parse(row["response"], parsing_timeout=None),
               timeout_seconds=None)
    return len(rows) / (time.monotonic() - start)


def ours_in_process(rows: list[dict]) -> float:
    from rlvr.rewards.math import is_equivalent

    start = time.monotonic()
    for row in rows:
        is_equivalent(row["response"], row["gold"])
    return len(rows) / (time.monotonic() - start)


def through_cli(path: Path, workers: int) -> str:
    from rlvr.scoring.verify import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([str(path), "--reward", "math", "--answer-key", "gold", "--response-key", "response",
              "--workers", str(workers)])
    return out.getvalue().splitlines()[0]


def adversarial(workers: int, timeout_s: float) -> None:
    from rlvr.config import RewardTermConfig
    from rlvr.scoring.service import Scorer
    from rlvr.types import Rollout, Sample

    def rollout(text: str) -> Rollout:
        return Rollout(Sample("adv", "q", "5"), text, "stop", (), (), (), 0)

    with Scorer([RewardTermConfig("math")], workers=workers, timeout_s=timeout_s) as scorer:
        scorer.wait_ready()
        start = time.monotonic()
        hung, fine = scorer.score_group([rollout(HANG), rollout(r"\boxed{5}")])
        took = time.monotonic() - start
        start = time.monotonic()
        after = scorer.score_group([rollout(r"\boxed{5}")] * 8)
        print(f"sympy hang: {hung.terms['math'].status} after {took:.2f} s (deadline {timeout_s:g} s); "
              f"the other call in its group: {fine.terms['math'].status}; next group of 8 scored in "
              f"{time.monotonic() - start:.2f} s, all ok: {all(s.ok for s in after)}; {scorer.stats()}")
    with Scorer([RewardTermConfig("verifier:raises")], workers=1, timeout_s=timeout_s) as scorer:
        (scored,) = scorer.score_group([rollout("x")])
        result = scored.terms["raises"]
        print(f"raising plugin: {result.status} ({result.error}); reward {scored.reward}")
    with Scorer([RewardTermConfig("verifier:exits")], workers=1, timeout_s=timeout_s) as scorer:
        scorer.wait_ready()
        start = time.monotonic()
        (scored,) = scorer.score_group([rollout("x")])
        print(f"plugin that kills its process: {scored.terms['exits'].status} ({scored.terms['exits'].error}) "
              f"in {time.monotonic() - start:.2f} s; replaced: {scorer.wait_ready()}; {scorer.stats()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "verifier" / "dev.jsonl")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline for the adversarial runs")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.open()]
    print(f"{len(rows)} rows from {args.data}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    agreement(rows)
    for i in range(args.repeats):
        print(f"run {i + 1}: plain math-verify, 1 process: {plain_math_verify(rows):.0f} rows/s; "
              f"ours, 1 process: {ours_in_process(rows):.0f} rows/s")
        print(f"run {i + 1}: rlvr verify --workers {args.workers}: {through_cli(args.data, args.workers)}")
    adversarial(args.workers, args.timeout)


if __name__ == "__main__":
    main()
