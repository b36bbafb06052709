"""Learner tokens/s and achieved FLOP/s of one RL step, per precision, on a synthetic batch.

    python benchmarks/learner_throughput.py --model builtin:smollm2-135m-instruct -P 2 -G 8 --prompt-len 64 \\
        --completion-len 64 --precision float32 bfloat16 autocast

One step is what the learner does per micro-batch and optimizer step: the shared-prompt forward and the
fused LM head (`rlvr.learner.forward.token_logprobs`), a policy-gradient loss -sum(A * log pi) / tokens, backward,
and `TorchUpdater.step` (clip, AdamW, copy back). Precisions:
  float32   fp32 weights, fp32 compute
  bfloat16  bf16 compute weights with fp32 masters in the optimizer (what `model.dtype = "bfloat16"` runs)
  autocast  fp32 weights under bf16 autocast (the learner's bf16 path before mixed-precision weights)
Tokens are those the model runs: each prompt once (its completions reuse its keys and values) plus every
completion token. FLOP/s counts 6 * N * tokens (Kaplan et al. 2020, eq. 2.1: forward 2N, backward 4N) with N
the weights of the linear layers (the LM head included, the input embedding, a lookup, not), leaving out
attention scores (small at these lengths) and the fused head's recomputed logits in the backward. Under
LoRA the frozen weights get no weight gradient, so 6N overstates its work.
CPU seconds (all threads of this process) are printed beside wall seconds: on a shared machine they
are the steadier measure, since time spent waiting for a core is not counted.
`--profile` prints torch.profiler's top operators of one step per precision.

Measured (2 cores of an AMD EPYC with AVX512-bf16, load average ~2, the command above with -P 1 --steps 3):
float32 3.81 s/step, 151 tokens/s, 122 GFLOP/s; bfloat16 2.44 s, 236 tokens/s, 191 GFLOP/s (1.56x; 1.48-1.62x
over four runs); autocast 2.72 s (1.40x). In bf16, matmuls take ~54% of the step (2.2x faster than fp32's),
the CPU flash attention ~12% (slower in bf16 than in fp32) and dtype copies ~9% (RMSNorm's fp32 upcasts,
master-gradient casts): those two are what keeps the step from the matmuls' 2.2x.
On 2 cores of an AMD EPYC without bf16 instructions (AVX2 only; no avx512_bf16 or amx_bf16 in /proc/cpuinfo),
load average ~4, --steps 2: float32 4.13 s/step, 139 tokens/s; bfloat16 159.8 s, 4 tokens/s (0.03x): torch
emulates bf16 there, so `model.dtype = "auto"` picks float32 and an explicit bfloat16 gets a warning.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlvr.algorithms.batch import pack
from rlvr.config import LoraConfig
from rlvr.learner.forward import token_logprobs
from rlvr.learner.optim import OptimSpec, TorchUpdater
from rlvr.learner.policy_model import load_policy
from rlvr.models.builtin import resolve_model

PRECISIONS = {  # name: (parameter dtype, compute dtype handed to token_logprobs)
    "float32": (torch.float32, torch.float32),
    "bfloat16": (torch.bfloat16, torch.bfloat16),
    "autocast": (torch.float32, torch.bfloat16),
}


def synthetic_batch(vocab: int, P: int, G: int, prompt_len: int, completion_len: int, seed: int = 0):
    """P prompts x G completions of random ids, advantages +-1 alternating within each group."""
    gen = torch.Generator().manual_seed(seed)
    ids = lambda n: tuple(torch.randint(0, vocab, (n,), generator=gen).tolist())  # noqa: E731
    prompts = [ids(prompt_len) for _ in range(P)]
    completions = [ids(completion_len) for _ in range(P * G)]
    index = [i // G for i in range(P * G)]
    advantages = [1.0 if i % 2 else -1.0 for i in range(P * G)]
    return pack(prompts, completions, index, [(0.0,) * completion_len] * (P * G), advantages)


def matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def one_step(policy, updater: TorchUpdater, batch, compute_dtype: torch.dtype) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one step."""
    start, cpu = time.perf_counter(), time.process_time()
    logprobs, _ = token_logprobs(policy.model, batch, temperature=1.0, fused_head=policy.fused_head,
                                 compute_dtype=compute_dtype, device=torch.device("cpu"))
    mask = batch.completion_mask_B_Lc
    loss = -(batch.advantages_B_Lc * logprobs * mask).sum() / mask.sum()
    updater.backward(loss)
    updater.step()
    return time.perf_counter() - start, time.process_time() - cpu


def measure(model_path: str, precision: str, batch, steps: int, lora: LoraConfig, profile: bool) -> dict:
    param_dtype, compute_dtype = PRECISIONS[precision]
    torch.manual_seed(0)
    policy = load_policy(model_path, lora, "cpu", param_dtype)
    policy.model.train()
    updater = TorchUpdater(policy.model, OptimSpec(lr=1e-6))
    one_step(policy, updater, batch, compute_dtype)  # warm-up: oneDNN primitives, allocator
    times = [one_step(policy, updater, batch, compute_dtype) for _ in range(steps)]
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            one_step(policy, updater, batch, compute_dtype)
        print(f"--- {precision}: top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    tokens = int((batch.prompts_P_Lp >= 0).sum() + batch.completion_mask_B_Lc.sum())
    median = statistics.median(wall for wall, _ in times)
    cpu = statistics.median(cpu for _, cpu in times)
    flops = 6 * matmul_params(policy.model) * tokens
    return {"precision": precision, "step_s": median, "cpu_s": cpu, "tokens": tokens, "tokens_per_s": tokens / median,
            "tokens_per_cpu_s": tokens / cpu, "gflops_per_s": flops / median / 1e9, "fused_head": policy.fused_head}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("-P", "--prompts", type=int, default=2)
    parser.add_argument("-G", "--group", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--completion-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one warm-up)")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=list(PRECISIONS))
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(path).get_text_config().vocab_size
    batch = synthetic_batch(vocab, args.prompts, args.group, args.prompt_len, args.completion_len)
    lora = LoraConfig(rank=args.lora_rank)
    print(f"{args.model}: P={args.prompts} G={args.group} prompt {args.prompt_len} + completion "
          f"{args.completion_len} tokens, lora rank {args.lora_rank}, {torch.get_num_threads()} threads")
    results = []
    for precision in args.precision:
        r = measure(path, precision, batch, args.steps, lora, args.profile)
        results.append(r)
        print(f"{precision:>9}: {r['step_s']:.3f} s/step (median of {args.steps}), {r['tokens']} tokens, "
              f"{r['tokens_per_s']:.0f} tokens/s, {r['gflops_per_s']:.0f} GFLOP/s (6 N T), "
              f"{r['cpu_s']:.3f} CPU s/step ({r['tokens_per_cpu_s']:.0f} tokens per CPU s)"
              + ("" if r["fused_head"] else ", logits path"), flush=True)
    base = next((r for r in results if r["precision"] == "float32"), None)
    if base:
        for r in results:
            if r["precision"] != "float32":
                print(f"{r['precision']} / float32 tokens/s: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x, "
                      f"per CPU s: {r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x")
    return results


if __name__ == "__main__":
    main()
