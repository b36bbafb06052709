"""`rlvr plot RUN_DIR [RUN_DIR ...]`: PNG curves of a run's metrics.jsonl, several runs overlaid.

    rlvr plot runs/tiny-arith runs/tiny-arith-rloo --output plots/

One PNG per panel: reward, correctness (the correctness term's mean, `reward/<label>/mean`), response
length, KL, entropy, step time, and the every-N evaluation (eval/pass@k, eval/avg@n, eval/maj@n) when a
run has it. Lines are raw per-step values (thin) with a moving average (thick) over 5% of the steps,
so a noisy reward still shows its trend. Without --output the PNGs go to the first run's `plots/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (file name, title, metrics.jsonl key or None for the run's correctness key)
PANELS = (
    ("reward.png", "reward (mean over rollouts)", "reward/mean"),
    ("correctness.png", "correctness (mean of the correctness term)", None),
    ("response_length.png", "response length (tokens)", "response_length/mean"),
    ("kl.png", "KL(policy || reference)", "kl"),
    ("entropy.png", "entropy (nats / token)", "entropy"),
    ("step_time.png", "step time (s)", "timing/step_s"),
)


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (is it a run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def correctness_key(run: Path) -> str:
    """reward/<label>/mean of the run's correctness term: reward.correctness, else the first term."""
    try:
        reward = json.loads((run / "run_config.json").read_text())["reward"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "reward/mean"
    first = reward["terms"][0]
    label = reward.get("correctness") or first.get("label") or first["name"].rpartition(":")[2]
    return f"reward/{label}/mean"


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [float(p[1]) for p in points]


def smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_runs(runs: list[Path], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a cluster node
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data = {run: read_metrics(run) for run in runs}
    names = _labels(runs)
    written = []
    for filename, title, key in PANELS:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        drawn = False
        for i, run in enumerate(runs):
            steps, values = series(data[run], key or correctness_key(run))
            if not steps:
                continue
            color = f"C{i}"
            ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(steps, smooth(values, max(1, len(values) // 20)), color=color, linewidth=2, label=names[run])
            drawn = True
        written += _finish(fig, ax, title, out / filename, drawn)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    drawn = False
    for i, run in enumerate(runs):
        eval_keys = sorted({k for r in data[run] for k in r if k.startswith("eval/") and "@" in k and "%" not in k})
        for j, key in enumerate(eval_keys):
            steps, values = series(data[run], key)
            ax.plot(steps, values, color=f"C{i}", marker="o", linestyle=["-", "--", ":", "-."][j % 4],
                    label=f"{names[run]} {key.removeprefix('eval/')}")
            drawn = True
    written += _finish(fig, ax, "held-out evaluation (every eval.every steps)", out / "eval.png", drawn)
    return written


def _finish(fig, ax, title: str, path: Path, drawn: bool) -> list[Path]:
    import matplotlib.pyplot as plt

    if not drawn:
        plt.close(fig)
        return []
    ax.set_title(title)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [path]


def _labels(runs: list[Path]) -> dict[Path, str]:
    """Each run's folder name; the whole path where two folder names clash."""
    names = [run.name for run in runs]
    return {run: run.name if names.count(run.name) == 1 else str(run) for run in runs}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlvr plot", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.jsonl)")
    p.add_argument("--output", type=Path, help="folder for the PNGs (default: FIRST_RUN/plots)")
    args = p.parse_args(argv)
    try:
        written = plot_runs(args.runs, args.output or args.runs[0] / "plots")
    except FileNotFoundError as e:
        print(f"rlvr plot: {e}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in written))
    return 0
