"""Benchmarks of the learner kernels against the torch paths; each prints one JSON object.

    python -m rlvr.kernels.bench logprobs --tokens 4096 --hidden 896 --vocab 151936 [--dtype bfloat16]
    python -m rlvr.kernels.bench policy-loss --batch 256 --seq 4096 [--policy gspo --mismatch tis ...]
    (`rlvr bench ...` dispatches here.)

`policy-loss` compares the loss table of rlvr/algorithms/losses.py ("torch"), `torch.compile` of it
("compile") and the fused kernel of kernels/fused_loss.py ("triton"), forward + backward with the
statistics, as the learner calls them. It always reports their agreement with the table (max abs
difference of the loss, of the gradients w.r.t. log-probs and entropy, and of the statistics); on CPU
the kernel runs in Triton's interpreter, so only the agreement is reported (interpreter times mean
nothing), on CUDA also the times and peak memory below.

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
    pl = sub.add_parser("policy-loss", help="the loss table vs torch.compile of it vs the fused Triton kernel",
                        formatter_class=defaults)
    pl.add_argument("--batch", type=int, default=None, help="sequences (default: 256 on CUDA, 8 on CPU)")
    pl.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: 4096 on CUDA, 203 on CPU)")
    pl.add_argument("--policy", default="ppo_clip", help="loss.policy")
    pl.add_argument("--aggregation", default="seq-mean-token-mean", help="loss.aggregation")
    pl.add_argument("--kl-estimator", default="k3", help="loss.kl_estimator")
    pl.add_argument("--kl-coef", type=float, default=0.04, help="loss.kl_coef (0: no reference log-probs)")
    pl.add_argument("--mismatch", default="tis", help="loss.mismatch (resolved: none, tis, tis_seq, mis, mis_seq)")
    pl.add_argument("--clip-high", type=float, default=0.28, help="loss.clip_high")
    pl.add_argument("--dual-clip", type=float, default=3.0, help="loss.dual_clip (0: none)")
    pl.add_argument("--entropy-coef", type=float, default=0.01, help="entropy bonus coefficient")
    for p in (lp, pl):
        p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype of inputs")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
        p.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
        p.add_argument("--warmup", type=int, default=1, help="untimed steps first (Triton compiles here)")
        p.add_argument("--rounds", type=int, default=1, help="fresh processes per impl, alternating impls")
        p.add_argument("--impls", default=None, help="comma-separated subset of naive,ours,liger (logprobs) or "
                       "torch,compile,triton (policy-loss; default on CPU torch,triton: compiling takes minutes there)")
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


def _loss_case(args, device: torch.device):
    """(LossConfig, LossInputs, logprobs, entropy, call keywords) of the policy-loss benchmark."""
    from rlvr.algorithms.losses import LossInputs
    from rlvr.config import LossConfig

    cfg = LossConfig(policy=args.policy, aggregation=args.aggregation, kl_estimator=args.kl_estimator,
                     kl_coef=args.kl_coef, clip_high=args.clip_high, dual_clip=args.dual_clip or None)
    g = torch.Generator().manual_seed(args.seed)
    B, T, dtype = args.batch, args.seq, DTYPES[args.dtype]
    logprobs = -torch.rand(B, T, generator=g) * 3
    old = logprobs + torch.randn(B, T, generator=g) * 0.3
    sampler = old + torch.randn(B, T, generator=g) * 0.2
    ref = logprobs + torch.randn(B, T, generator=g) * 0.3
    entropy = torch.rand(B, T, generator=g) * 2
    advantages = torch.randn(B, generator=g)[:, None].expand(B, T).contiguous()
    mask = torch.arange(T)[None, :] < torch.randint(T // 4, T + 1, (B,), generator=g)[:, None]
    lp, ent = (t.to(device, dtype).requires_grad_() for t in (logprobs, entropy))
    x = LossInputs(lp, old.to(device, dtype), sampler.to(device, dtype), advantages.to(device), mask.to(device),
                   normalizer=float(mask.sum()) if args.aggregation == "token-mean" else float(B),
                   ref_logprobs_B_T=ref.to(device, dtype) if args.kl_coef > 0 else None, entropy_B_T=ent)
    return cfg, x, lp, ent, dict(entropy_coef=args.entropy_coef, mismatch=args.mismatch, norm_length=T)


def _loss_fn(impl: str, cfg):
    """The learner's loss call for one implementation: (fn, its LossConfig)."""
    import dataclasses

    from rlvr.algorithms.losses import compute_loss
    from rlvr.kernels.fused_loss import policy_loss

    if impl == "torch":
        return compute_loss, cfg
    if impl == "compile":
        return torch.compile(compute_loss), cfg
    if impl == "triton":
        return policy_loss, dataclasses.replace(cfg, kernel="triton")
    raise ValueError(f"unknown implementation {impl!r}: torch, compile or triton")


def _policy_loss_step(args, impl: str, device: torch.device) -> Callable[[], None]:
    cfg, x, lp, ent, kw = _loss_case(args, device)
    fn, cfg = _loss_fn(impl, cfg)

    def step():
        lp.grad = ent.grad = None
        loss, _ = fn(cfg, x, **kw)
        loss.backward()

    return step


def _agreement(args, impls: list[str], device: torch.device) -> dict:
    """Each implementation against the torch table on the same inputs: max abs differences."""
    cfg, x, lp, ent, kw = _loss_case(args, device)

    def run(impl):
        fn, c = _loss_fn(impl, cfg)
        lp.grad = ent.grad = None
        loss, stats = fn(c, x, **kw)
        loss.backward()
        flat = stats.sums | stats.losses | stats.maxima | {"tokens": stats.tokens}
        return float(loss), lp.grad.float().clone(), None if ent.grad is None else ent.grad.float().clone(), flat

    loss0, dlp0, dent0, stats0 = run("torch")
    out = {}
    for impl in impls:
        if impl == "torch":
            continue
        loss, dlp, dent, stats = run(impl)
        out[impl] = {
            "loss": loss,
            "loss_abs_diff": abs(loss - loss0),
            "grad_logprobs_max_abs_diff": float((dlp - dlp0).abs().max()),
            "grad_entropy_max_abs_diff": None if dent is None else float((dent - dent0).abs().max()),
            # relative to the value where it is above 1 (ratio/max, token counts), absolute below
            "stats_max_diff": max(abs(stats[k] - stats0[k]) / max(1.0, abs(stats0[k])) for k in stats0),
            "stats_keys_equal": list(stats) == list(stats0),
        }
    return {"torch_loss": loss0, "grad_logprobs_max_abs": float(dlp0.abs().max()), "vs_torch": out}


def _run_child(args) -> dict:
    device = torch.device(args.device)
    if args.child.startswith("agreement:"):
        return _agreement(args, args.child.split(":", 1)[1].split(","), device)
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


CHILD_TIMEOUT_S = 1800  # one implementation's timing (the interpreter on CPU is the slowest)


def _child(argv: list[str], args, child: str, env: dict | None = None) -> tuple[dict | None, str | None]:
    """Run one implementation (or the agreement check) in a fresh process: (its JSON, or its last error line)."""
    cmd = [sys.executable, "-m", "rlvr.kernels.bench", *argv, "--device", args.device, "--child", child]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"{child}: no result within {CHILD_TIMEOUT_S} s"
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def _time_impls(argv: list[str], args, impls: list[str], env: dict | None = None) -> dict:
    runs, errors = {impl: [] for impl in impls}, {}
    for _ in range(args.rounds):  # rounds alternate the implementations, so all see the same load
        for impl in impls:
            if impl in errors:
                continue
            result, error = _child(argv, args, impl, env)
            if error is not None:
                errors[impl] = error
            else:
                runs[impl].append(result)
    return {impl: {"error": errors[impl]} if impl in errors else _summary(args, runs[impl]) for impl in impls}


def _header(args) -> dict:
    return {
        "bench": args.bench,
        "shape": {k: getattr(args, k) for k in ("tokens", "hidden", "vocab", "batch", "seq") if hasattr(args, k)},
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
    }


def _timing_fields(args, load_before, results) -> dict:
    return {
        "memory_method": "torch.cuda.max_memory_allocated - allocated before the steps"
        if args.device == "cuda"
        else "process RSS sampled every 1 ms (psutil thread) minus RSS after building inputs; fresh process per impl",
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "load_avg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "results": results,
    }


def _ratios(ours: dict, base: dict) -> dict | None:
    if "time_s" not in ours or "time_s" not in base:
        return None
    return {
        "time": round(ours["time_s"] / base["time_s"], 3),
        "cpu_time": round(ours["cpu_s"] / base["cpu_s"], 3),
        "memory": round(ours["peak_extra_mb"] / max(base["peak_extra_mb"], 1e-9), 4),
    }


def _policy_loss_report(argv: list[str], args, load_before) -> dict:
    on_cuda = args.device == "cuda"
    args.batch = args.batch or (256 if on_cuda else 8)
    args.seq = args.seq or (4096 if on_cuda else 203)
    argv = [*argv, "--batch", str(args.batch), "--seq", str(args.seq)]
    impls = args.impls.split(",") if args.impls else ["torch", "compile", "triton"] if on_cuda else ["torch", "triton"]
    env = os.environ.copy()
    if on_cuda:
        env.pop("TRITON_INTERPRET", None)
    else:  # the kernel can only run in the interpreter here, which triton reads at import: set it for the child
        env["TRITON_INTERPRET"] = "1"
    report = _header(args)
    if not on_cuda:
        report["device"] += ", Triton interpreter"
    report["config"] = {k: getattr(args, k) for k in ("policy", "aggregation", "kl_estimator", "kl_coef", "mismatch",
                                                         "clip_high", "dual_clip", "entropy_coef")}
    agreement, error = _child(argv, args, "agreement:" + ",".join(impls), env)
    report["agreement"] = agreement if error is None else {"error": error}
    if on_cuda:  # interpreter times measure numpy, not the kernel: timed on CUDA only
        results = _time_impls(argv, args, impls, env)
        report |= _timing_fields(args, load_before, results)
        report["vs_torch"] = {impl: _ratios(results[impl], results.get("torch", {})) for impl in impls if impl != "torch"}
    return report


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(_run_child(args)))
        return 0
    load_before = os.getloadavg()
    if args.bench == "policy-loss":
        print(json.dumps(_policy_loss_report(argv, args, load_before)))
        return 0

    impls = args.impls.split(",") if args.impls else ["naive", "ours"]
    if args.impls is None and args.device == "cuda":
        impls.append("liger")
    results = _time_impls(argv, args, impls)
    report = _header(args) | _timing_fields(args, load_before, results)
    ratios = _ratios(results.get("ours", {}), results.get("naive", {}))
    if ratios is not None:
        report["ours_vs_naive"] = ratios
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
