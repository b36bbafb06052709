"""Peak learner memory of one RL step, before and after token-budget micro-batches and activation checkpointing.

    python benchmarks/learner_memory.py                                   # SmolLM2-135M, G=16, 512 new tokens
    python benchmarks/learner_memory.py --model builtin:tiny-char --group 16 --completion-len 256
    python benchmarks/learner_memory.py --device cuda --model Qwen/Qwen2.5-Math-1.5B --completion-len 3072

Each setting runs in a fresh process (the CPU peak is the process's resident high-water mark,
`rlvr/learner/memory.py`; on GPU, the allocator's peak): one `Learner.train_step` on a synthetic batch of
`--prompts` prompts x `--group` completions of `--completion-len` tokens. The settings:

- whole group: one group per forward/backward (what `micro_batch_size >= G` gave before the token budget:
  examples/math_grpo.toml's 16 x 3,072 tokens in one backward)
- token budget: `learner.max_tokens_per_micro_batch = --budget` (groups split when larger)
- budget + checkpointing: and `learner.activation_checkpointing = true`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one(args: argparse.Namespace, max_tokens: int, checkpointing: bool, micro: int) -> dict:
    import torch

    from rlvr.algorithms.batch import pack
    from rlvr.config import LossConfig
    from rlvr.learner.actor import Learner
    from rlvr.learner.optim import OptimSpec
    from rlvr.models.builtin import resolve_model

    path = resolve_model(args.model)
    learner = Learner.__ray_actor_class__(
        path, optim=OptimSpec(lr=1e-6), loss=LossConfig(), dtype=args.dtype, micro_batch_size=micro,
        max_tokens_per_micro_batch=max_tokens, activation_checkpointing=checkpointing, device=args.device,
        threads=args.threads,
    )
    vocab = learner.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [tuple(torch.randint(10, vocab, (args.prompt_len,), generator=g).tolist()) for _ in range(args.prompts)]
    n = args.prompts * args.group
    completions = [tuple(torch.randint(10, vocab, (args.completion_len,), generator=g).tolist()) for _ in range(n)]
    index = [i // args.group for i in range(n)]
    advantages = torch.randn(n, generator=g).tolist()
    batch = pack(prompts, completions, index, [(-1.0,) * args.completion_len] * n, advantages)
    learner.set_reference()
    start = time.perf_counter()
    metrics = learner.train_step(batch)
    seconds = time.perf_counter() - start
    tokens = n * args.completion_len + args.prompts * args.prompt_len
    return {"peak_gb": metrics["memory/learner_peak_gb"], "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--group", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--completion-len", type=int, default=512)
    p.add_argument("--budget", type=int, default=2048, help="max_tokens_per_micro_batch of the budgeted settings")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    args = p.parse_args()
    if args.one:
        max_tokens, checkpointing, micro = json.loads(args.one)
        print(json.dumps(one(args, max_tokens, checkpointing, micro)))
        return
    settings = [
        ("whole group", 0, False, args.group),
        (f"token budget {args.budget}", args.budget, False, args.group),
        (f"budget {args.budget} + checkpointing", args.budget, True, args.group),
    ]
    tokens = args.prompts * (args.group * args.completion_len + args.prompt_len)
    print(f"{args.model} ({args.dtype}, {args.device}): {args.prompts} prompt(s) x G={args.group} x "
          f"{args.completion_len} new tokens (+{args.prompt_len} prompt) = {tokens} tokens per step")
    print(f"{'setting':36s} {'peak GB':>8s} {'step s':>8s} {'tokens/s':>9s}")
    for name, max_tokens, checkpointing, micro in settings:
        argv = [sys.executable, __file__, "--one", json.dumps([max_tokens, checkpointing, micro])]
        for key in ("model", "dtype", "device", "threads", "prompts", "group", "prompt_len", "completion_len"):
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode:
            print(f"{name:36s} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:36s} {r['peak_gb']:8.2f} {r['seconds']:8.1f} {r['tokens_per_s']:9.0f}", flush=True)


if __name__ == "__main__":
    main()
