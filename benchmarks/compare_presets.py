"""Run every method preset for a fixed number of RL steps and write a comparison table into the docs.

    python benchmarks/compare_presets.py --steps 60 --out runs/compare --doc docs/algorithms.md

Each preset (examples/tiny_arith_<name>.toml) is the demo task and model, differing from the GRPO preset
only in what its method needs. Every run is a real `rlvr train` subprocess; the table is built from the
runs' metrics.jsonl and summary.json, then written between the markers in the doc (with the command that
made it), so it is never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ["grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo", "dapo", "gspo", "cispo", "opd"]
BEGIN, END = "<!-- compare_presets:begin -->", "<!-- compare_presets:end -->"


def run(name: str, steps: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "rlvr.cli", "train", f"examples/tiny_arith_{name}.toml", "--output-dir", str(run_dir),
           "--overwrite", "--max-steps", str(steps), *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        return {"preset": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1], "wall_s": wall}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    first, last = records[:10], records[-10:]
    mean = lambda rows, key: statistics.fmean(r[key] for r in rows if r.get(key) is not None)  # noqa: E731
    return {
        "preset": name,
        "reward_first10": mean(first, "reward/mean"),
        "reward_last10": mean(last, "reward/mean"),
        "acc_before": summary["eval/accuracy_before_rl"],
        "acc_after": summary["eval/accuracy_after_rl"],
        "length_last10": mean(last, "response_length/mean"),
        "step_s_median": statistics.median(r["timing/step_s"] for r in records),
        "wall_s": wall,
    }


def table(rows: list[dict], command: str) -> str:
    lines = [
        f"Made by `{command}` ({time.strftime('%Y-%m-%d')}, this machine: {_cores()} CPU cores).",
        "",
        "| preset | reward first 10 | reward last 10 | held-out acc before | after | response length (last 10) | median step s | run wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | failed: {r['error']} | | | | | | {r['wall_s']:.0f} |")
            continue
        lines.append(
            f"| {r['preset']} | {r['reward_first10']:.3f} | {r['reward_last10']:.3f} | {r['acc_before']:.3f} | "
            f"{r['acc_after']:.3f} | {r['length_last10']:.2f} | {r['step_s_median']:.2f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def write_doc(doc: Path, text: str) -> None:
    content = doc.read_text() if doc.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = content.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="RL steps per preset (default: 60)")
    parser.add_argument("--out", default="runs/compare", help="run folders go here (default: runs/compare)")
    parser.add_argument("--doc", default="docs/algorithms.md", help="doc whose table is replaced (default: docs/algorithms.md)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names (default: all)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to every run")
    args = parser.parse_args()
    command = "python benchmarks/compare_presets.py " + " ".join(
        [f"--steps {args.steps}"] + ([f"--presets {args.presets}"] if args.presets != ",".join(PRESETS) else []) + args.overrides
    )
    rows = []
    for name in args.presets.split(","):
        rows.append(run(name, args.steps, Path(args.out), args.overrides))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, command)
    write_doc(Path(args.doc), text)
    print(text)


if __name__ == "__main__":
    main()
