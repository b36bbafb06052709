"""Median RL step time of `rlvr train`, per precision and staleness, read from the run's metrics.jsonl.

    python benchmarks/step_time.py --steps 4 --skip 2 --dtype float32 --staleness 0 -- cluster.dashboard=false
    python benchmarks/step_time.py --steps 4 --skip 2 --dtype float32 bfloat16 --staleness 0 1

Overrides for every run go last, after `--` (the list options would take them otherwise).

Each (dtype, staleness) pair is a real `rlvr train CONFIG --max-steps N model.dtype=D train.max_staleness=S`
subprocess (default CONFIG: examples/smollm2_chain_sum.toml, SmolLM2-135M-Instruct at P=4, G=4, 64 new
tokens). The first `--skip` steps are left out of the medians: the first pays for allocator and
kernel warm-up in the engine and the learner. `timing/step_s` is the time between two learner steps in
both loops; under staleness > 0 generation overlaps training, so the parts need not add up to it.
The 1-minute load average is printed before each run: on a shared machine it says how much the figures
are worth. TRL's GRPOTrainer at the same settings: benchmarks/trl_grpo_step_time.py.

Measured on 2 cores of an AMD EPYC with AVX2 only (no bf16 instructions: torch and vLLM emulate bf16), shared
with other developers, the first command above: fp32 steps 33.8, 74.5, 15.2, 33.8 s, median of the last two
24.5 s (generate 7.1, train 16.2, sync 1.2), load average 1.1 before and 5.0 after; the same run under load
7.8-22: 101.7, 128.7, 167.8, 129.1 s. Step times swing with the load more than with anything else here.
bf16, --steps 1 --skip 0 (its first step only; load 3.3 before, 27-40 during): 628.8 s (generate 108.6, train
516.8, sync 3.5), the cost of emulated bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PARTS = ("generate", "reward", "train", "sync", "wait_for_rollouts")  # timing/<part>_s, where the run logs it


def run(config: str, dtype: str, staleness: int, steps: int, skip: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"{dtype}-staleness{staleness}"
    cmd = [sys.executable, "-m", "rlvr.cli", "train", config, "--output-dir", str(run_dir), "--overwrite",
           "--max-steps", str(steps), f"model.dtype={dtype}", f"train.max_staleness={staleness}", *extra]
    row: dict = {"dtype": dtype, "max_staleness": staleness, "load_1min_before": round(os.getloadavg()[0], 2)}
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if done.returncode:
        return row | {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    measured = records[skip:]
    if not measured:
        return row | {"error": f"{len(records)} steps logged, none left after skipping {skip}"}
    row |= {"steps_measured": len(measured), "step_s_median": _median(measured, "timing/step_s"),
            "step_s_all": [round(r["timing/step_s"], 2) for r in records],
            # Sampled completions end at EOS, so a step's time follows their length: compare it with TRL's too.
            "response_length_all": [round(r["response_length/mean"], 1) for r in records]}
    for part in PARTS:
        if any(f"timing/{part}_s" in r for r in measured):
            row[f"{part}_s_median"] = _median(measured, f"timing/{part}_s")
    return row | {"load_1min_after": round(os.getloadavg()[0], 2)}


def _median(records: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in records if r.get(key) is not None), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="examples/smollm2_chain_sum.toml")
    parser.add_argument("--steps", type=int, default=8, help="RL steps per run (default: 8)")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians (default: 2)")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--staleness", nargs="+", type=int, default=[0], help="train.max_staleness values (default: 0)")
    parser.add_argument("--out", default="runs/step_time", help="run folders go here (default: runs/step_time)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to every run")
    args = parser.parse_args()
    print(f"{args.config}: {args.steps} steps, medians after the first {args.skip}, {os.cpu_count()} cores", flush=True)
    for dtype in args.dtype:
        for staleness in args.staleness:
            print(json.dumps(run(args.config, dtype, staleness, args.steps, args.skip, Path(args.out), args.overrides)),
                  flush=True)


if __name__ == "__main__":
    main()
