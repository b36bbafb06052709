"""Benchmarks of the learner kernels against the naive torch paths; each prints one JSON object.

    python -m rlvr.kernels.bench logprobs --tokens 4096 --hidden 896 --vocab 151936 [--dtype bfloat16]
    python -m rlvr.kernels.bench policy-loss --batch 256 --seq 4096 [--dtype bfloat16]
    (`rlvr bench ...` dispatches here.)

Each implementation runs forward + backward (upstream gradients on every output) in its own fresh
child process, so one cannot inherit the other's heap; with --rounds R the implementations alternate
R times, so on a shared machine both see the same load. Reported per implementation: wall time per
step (median, and every timed step after the warm-up ones), process CPU time per step (all threads;
less sensitive than wall time to other processes), and peak extra memory: the step's peak minus
what was allocated once the inputs were built, gradients included. How memory is measured is stated in
the output (`memory_method`):
  * CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before the first step.
  * CPU: tracemalloc cannot see torch's allocations, so a background thread samples the process RSS
    (psutil, every millisecond) and glibc's malloc_trim(0) returns freed heap first. It counts
    pages actually touched, allocator slack included; a spike shorter than 1 ms could be missed,
    but the [N, V] tensors here live for hundreds of milliseconds.
On CUDA the log-prob benchmark also reports effective TFLOPS (the 6 N H V of the naive matmuls:
forward 2 N H V, backward 4 N H V; our backward's recomputation is not counted, as in Liger's
figures) and Liger-Kernel's fused linear cross-entropy (a scalar CE loss, not log-probs + entropy:
the nearest public op) when liger_kernel is installed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter  # every flag's help shows its default
    lp = sub.add_parser("logprobs", help="linear_logprobs vs logits + log_softmax + gather + entropy",
                        formatter_class=defaults)
    lp.add_argument("--tokens", type=int, default=4096, help="tokens (rows of hidden states)")
    lp.add_argument("--hidden", type=int, default=896, help="hidden size (Qwen2.5-0.5B: 896)")
    lp.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen2.5: 151936)")
    lp.add_argument("--temperature", type=float, default=1.0, help="sampling temperature the logits are divided by")
    pl = sub.add_parser("policy-loss", help="policy_loss vs the autograd reference", formatter_class=defaults)
    pl.add_argument("--batch", type=int, default=256, help="sequences")
    pl.add_argument("--seq", type=int, default=4096, help="tokens per sequence")
    pl.add_argument("--aggregation", default="seq-mean-token-mean", help="loss aggregation (loss.aggregation)")
    pl.add_argument("--ratio-level", default="token", choices=["token", "sequence"], help="importance ratio level")
    pl.add_argument("--kl-coef", type=float, default=0.04, help="KL penalty coefficient")
    pl.add_argument("--dual-clip", type=float, default=3.0, help="dual-clip bound c")
    for p in (lp, pl):
        p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype of inputs")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
        p.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
        p.add_argument("--warmup", type=int, default=1, help="untimed steps first (Triton compiles here)")
        p.add_argument("--rounds", type=int, default=1, help="fresh processes per impl, alternating impls")
        p.add_argument("--impls", default=None, help="comma-separated subset of naive,ours,liger")
        p.add_argument("--seed", type=int, default=0, help="input seed")
        p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # run one impl in this process
    return parser


# ----------------------------------------------------------------------------- memory and time


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: RSS then also holds freed heap, which only makes the baseline higher
        pass


class _RssPeak:
    """Highest RSS seen by a 1 ms sampling thread while active."""

    def __init__(self, interval_s: float = 0.001):
        import psutil

        self._process, self._interval = psutil.Process(), interval_s
        self._stop = threading.Event()
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self._process.memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _measure(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> dict:
    gc.collect()
    _malloc_trim()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, cpu_times = [], []

    def timed_steps():
        for _ in range(warmup + repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)

    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        timed_steps()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with _RssPeak() as sampler:
            base = sampler.rss()
            timed_steps()
        peak = sampler.peak - base
    return {"times_s": times[warmup:], "cpu_times_s": cpu_times[warmup:], "peak_extra_mb": peak / 2**20}


# ----------------------------------------------------------------------------- the benchmarks


def _logprobs_step(args, impl: str, device: torch.device) -> Callable[[], None]:
    from rlvr.kernels import linear_logprobs, logits_logprobs_reference

    g = torch.Generator().manual_seed(args.seed)
    N, H, V, dtype = args.tokens, args.hidden, args.vocab, DTYPES[args.dtype]
    hidden = torch.randn(N, H, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g) / H**0.5).to(device, dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g).to(device)
    d_logprobs, d_entropy = torch.randn(2, N, generator=g).to(device).unbind(0)

    if impl == "naive":  # what learners write: full logits, upcast, log_softmax, gather, entropy

        def forward():
            return logits_logprobs_reference(hidden @ weight.T, targets, args.temperature)

    elif impl == "ours":

        def forward():
            return linear_logprobs(hidden, weight, targets, args.temperature)

    elif impl == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger_ce = LigerFusedLinearCrossEntropyLoss(reduction="sum")

        def forward():
            out = liger_ce(weight, hidden, targets)
            return (out[0] if isinstance(out, tuple) else out), None

    else:
        raise ValueError(f"unknown implementation {impl!r}")

    def step():
        hidden.grad = weight.grad = None
        logprobs, entropy = forward()
        loss = logprobs.sum() if entropy is None else d_logprobs @ logprobs + d_entropy @ entropy
        loss.backward()

    return step


def _policy_loss_step(args, impl: str, device: torch.device) -> Callable[[], None]:
    from rlvr.kernels import PolicyLossConfig, policy_loss, policy_loss_reference

    g = torch.Generator().manual_seed(args.seed)
    B, T, dtype = args.batch, args.seq, DTYPES[args.dtype]
    config = PolicyLossConfig(
        clip_high=0.28, dual_clip=args.dual_clip, kl_coef=args.kl_coef,
        aggregation=args.aggregation, ratio_level=args.ratio_level,
    )  # fmt: skip
    logprobs = (-torch.rand(B, T, generator=g) * 3).to(device, dtype).requires_grad_()
    old = (logprobs.detach().float() + torch.randn(B, T, generator=g).to(device) * 0.3).to(dtype)
    ref = (logprobs.detach().float() + torch.randn(B, T, generator=g).to(device) * 0.3).to(dtype)
    entropy = (torch.rand(B, T, generator=g) * 2).to(device, dtype)
    advantages = torch.randn(B, generator=g).to(device)
    mask = torch.arange(T)[None, :] < torch.randint(T // 4, T + 1, (B,), generator=g)[:, None]
    mask = mask.to(device)
    fn = {"naive": policy_loss_reference, "ours": policy_loss}[impl]

    def step():
        logprobs.grad = None
        loss, metrics = fn(logprobs, old, advantages, mask, config, ref, entropy)
        loss.backward()

    return step


def _run_child(args) -> dict:
    device = torch.device(args.device)
    make = _logprobs_step if args.bench == "logprobs" else _policy_loss_step
    return _measure(make(args, args.child, device), device, args.repeats, args.warmup)


def _summary(args, runs: list[dict]) -> dict:
    """Median over every timed step of every round; the highest peak of any round."""
    times = [t for r in runs for t in r["times_s"]]
    result = {
        "time_s": round(statistics.median(times), 4),
        "times_s": [round(t, 4) for t in times],
        "cpu_s": round(statistics.median([t for r in runs for t in r["cpu_times_s"]]), 4),
        "peak_extra_mb": round(max(r["peak_extra_mb"] for r in runs), 1),
    }
    if args.bench == "logprobs" and args.device == "cuda":
        result["tflops_effective"] = round(6 * args.tokens * args.hidden * args.vocab / result["time_s"] / 1e12, 1)
    return result


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(_run_child(args)))
        return 0

    impls = args.impls.split(",") if args.impls else ["naive", "ours"]
    if args.impls is None and args.bench == "logprobs" and args.device == "cuda":
        impls.append("liger")
    load_before = os.getloadavg()
    runs, errors = {impl: [] for impl in impls}, {}
    for _ in range(args.rounds):  # rounds alternate the implementations, so both see the same load
        for impl in impls:
            if impl in errors:
                continue
            cmd = [sys.executable, "-m", "rlvr.kernels.bench", *argv, "--device", args.device, "--child", impl]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                errors[impl] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            else:
                runs[impl].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {impl: {"error": errors[impl]} if impl in errors else _summary(args, runs[impl]) for impl in impls}
    report = {
        "bench": args.bench,
        "shape": {k: getattr(args, k) for k in ("tokens", "hidden", "vocab", "batch", "seq") if hasattr(args, k)},
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "memory_method": "torch.cuda.max_memory_allocated - allocated before the steps"
        if args.device == "cuda"
        else "process RSS sampled every 1 ms (psutil thread) minus RSS after building inputs; fresh process per impl",
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "load_avg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "results": results,
    }
    naive, ours = results.get("naive", {}), results.get("ours", {})
    if "time_s" in naive and "time_s" in ours:
        report["ours_vs_naive"] = {
            "time": round(ours["time_s"] / naive["time_s"], 3),
            "cpu_time": round(ours["cpu_s"] / naive["cpu_s"], 3),
            "memory": round(ours["peak_extra_mb"] / max(naive["peak_extra_mb"], 1e-9), 4),
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
