"""Checks run before anything starts: every mistake the config can show costs seconds, not a cluster start.

    warnings = preflight(cfg)              # raises PreflightError (one line) on the first hard failure
    for line in warnings: print(line)      # cross-field mismatches that only cost speed

Without it, a misspelt reward name, a plugin module that cannot be imported or a wrong reward kwarg
surfaced only after Ray, vLLM and the SFT stage had started (33 s or more), as a 100-line
`ActorDiedError` from the reward service. Here every reward term is resolved exactly as the reward
service will resolve it (import the module, find the name, build it with its kwargs), the data
source's first rows are read with the configured keys, and a few settings are checked together.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlvr.config import ClusterConfig, Config, RewardConfig
from rlvr.data.sources import RG_PREFIX, DataError, _gsm8k_answer, _jsonl_rows, _lookup, generate_task
from rlvr.rewards import registry
from rlvr.runtime.precision import Hardware, bf16_warning

_ROWS_CHECKED = 3  # enough to catch a wrong key or format; reading the whole file is train()'s job


class PreflightError(ValueError):
    """A config that cannot run: the message is one line naming the key, file or reward term."""

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind  # "config", "reward" or "data": the CLI prints "rlvr: <kind> error: ..."


def preflight(cfg: Config, *, check_data: bool = True, hardware: Hardware | None = None) -> list[str]:
    """Raise PreflightError on the first fatal mistake; return warnings (one line each) otherwise.
    hardware: what bf16 is judged against (default: this machine's)."""
    if cfg.train.steps < 0:
        raise PreflightError(f"train.steps = {cfg.train.steps}: must be >= 0 (0: SFT and one evaluation, no RL)")
    if cfg.cluster.placement == "colocated" and cfg.rollout.gpus_per_engine > 0:
        # NCCL refuses a learner rank and an engine worker on one GPU, and the CPU transports need vLLM's
        # insecure serialisation with GPU engines; a same-GPU transport (vLLM's "ipc" weight transfer) is next.
        raise PreflightError('cluster.placement = "colocated" on GPUs: the weight sync between a learner rank and '
                             'the engine on its GPU needs a same-GPU transport, which rlvr does not have yet; use '
                             '"disaggregated" (placement itself is in rlvr/runtime/placement.py)')
    check_rewards(cfg.reward)
    check_dashboard_port(cfg.cluster)
    for key, path in (("model.path", cfg.model.path), ("critic.path", cfg.critic.path),
                      ("distill.teacher", cfg.distill.teacher)):
        check_model_path(key, path)
    if check_data:
        d = cfg.data
        check_source(d.source, d.prompt_key, d.answer_key, d.answer_format, d.task_kwargs, "data.source")
        if d.eval_source:
            check_source(d.eval_source, d.prompt_key, d.answer_key, d.answer_format, d.task_kwargs, "data.eval_source")
    return speed_warnings(cfg, hardware)


def check_dashboard_port(c: ClusterConfig) -> None:
    """A local cluster's dashboard on an explicit port needs that port free (0 takes 8265 or the next free one)."""
    if not (c.dashboard and c.dashboard_port) or c.address or os.environ.get("RAY_ADDRESS"):
        return
    with socket.socket(socket.AF_INET6 if ":" in c.dashboard_host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray's own check: a closing socket is no owner
        try:
            s.bind((c.dashboard_host, c.dashboard_port))
        except OSError as e:
            raise PreflightError(f"cluster.dashboard_port = {c.dashboard_port}: {c.dashboard_host}:{c.dashboard_port} "
                                 f"is taken ({e.strerror}); 0 takes 8265 or the next free port") from None


def check_model_path(key: str, path: str) -> None:
    """A model folder must hold a config.json; builtin names are checked by name (they build on first use)."""
    from rlvr.models.builtin import BUILTINS

    if not path:
        return
    if path.startswith("builtin:"):
        if path not in BUILTINS:
            raise PreflightError(f"{key} = {path!r}: unknown builtin model (known: {', '.join(BUILTINS)})")
        return
    folder = Path(path).expanduser()
    if folder.exists() and not (folder / "config.json").exists():
        raise PreflightError(f"{key} = {path!r}: the folder has no config.json (not a Hugging Face model folder)")
    if not folder.exists() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
        raise PreflightError(f"{key} = {path!r}: no such folder")  # not a hub id of the form org/name either


def check_rewards(cfg: RewardConfig) -> list[tuple[str, Any]]:
    """Resolve every term as the reward service will; returns (label, callable) pairs."""
    resolved, group = [], []
    for i, term in enumerate(cfg.terms):
        where = f"reward.terms[{i}] (name = {term.name!r})"
        try:
            fn = registry.resolve(term.name, term.kwargs)
        except (registry.UnknownRewardError, TypeError) as e:  # their messages name the problem
            raise PreflightError(f"{where}: {one_line(e)}", "reward") from None
        except Exception as e:  # a plugin module or constructor that raises while loading can raise anything
            raise PreflightError(f"{where}: {type(e).__name__} while loading it: {one_line(e)}", "reward") from None
        label = term.label or term.name.rpartition(":")[2]
        if "/" in label or label in dict(resolved):
            raise PreflightError(f"{where}: label {label!r} is duplicated or contains '/'; set a distinct `label`",
                                 "reward")
        resolved.append((label, fn))
        group.append(registry.is_group_reward(fn))
    if not resolved:
        raise PreflightError("reward.terms is empty: configure at least one reward term", "reward")
    per_rollout = [label for (label, _), g in zip(resolved, group) if not g]
    if cfg.correctness and cfg.correctness not in per_rollout:
        raise PreflightError(f"reward.correctness = {cfg.correctness!r} is not a per-rollout term label "
                             f"(have {per_rollout})", "reward")
    if any(group) and not per_rollout:
        raise PreflightError("reward.terms has only group shapers: they need a per-rollout correctness term", "reward")
    return resolved


def describe_terms(cfg: RewardConfig) -> str:
    """One line: each active term with its weight and where it was loaded from."""
    parts = []
    for (label, fn), term in zip(check_rewards(cfg), cfg.terms):
        target = fn.func if isinstance(fn, functools.partial) else fn
        obj = target if inspect.isfunction(target) or inspect.isclass(target) else type(target)
        origin = f"{obj.__module__}:{obj.__qualname__}"
        kwargs = f" {term.kwargs}" if term.kwargs else ""
        parts.append(f"{label} x{term.weight:g} ({origin}{kwargs})")
    return "reward terms: " + ", ".join(parts)


def check_source(source: str, prompt_key: str, answer_key: str, answer_format: str, task_kwargs: dict,
                 where: str) -> None:
    """The source exists and its first rows have the configured keys (and format)."""
    try:
        if source.startswith(RG_PREFIX):
            try:
                generate_task(source, _ROWS_CHECKED, 0, prompt_key, task_kwargs)  # checks task, options, prompt key
            except DataError as e:
                raise DataError(f"data.prompt_key = {prompt_key!r}: {e}" if "row has no key" in str(e) else str(e))
            return
        for at, row in _first_rows(Path(source), where):
            _lookup(row, prompt_key, where=at, what="prompt key (data.prompt_key)")
            answer = _lookup(row, answer_key, where=at, what="answer key (data.answer_key)")
            if answer_format == "gsm8k":
                _gsm8k_answer(str(answer), at)
    except DataError as e:
        raise PreflightError(str(e), "data") from None


def _first_rows(file: Path, where: str) -> Iterator[tuple[str, dict]]:
    if not file.exists():  # the config's paths are absolute by now (rlvr/config.py PATH_KEYS); a caller's may not be
        raise DataError(f"{where}: data file not found: {file.absolute()} (a relative path in a config file is "
                        "relative to that file's folder; on the command line, to the working directory)")
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(file).iter_batches(batch_size=_ROWS_CHECKED), None)
        rows = batch.to_pylist() if batch is not None else []
        yield from ((f"{file} row {i}", row) for i, row in enumerate(rows, start=1))
    elif file.suffix in (".jsonl", ".json"):
        yield from ((f"{file}:{n}", row) for n, row in itertools.islice(_jsonl_rows(file), _ROWS_CHECKED))
    else:
        raise DataError(f"{where}: {file}: unsupported data file type {file.suffix!r} (use .jsonl or .parquet)")


def speed_warnings(cfg: Config, hardware: Hardware | None = None) -> list[str]:
    """Settings that run, but slower than the user probably meant."""
    warnings = [w for w in (bf16_warning(cfg, hardware),) if w]
    rollouts = cfg.data.batch_size * cfg.algo.group_size
    per_engine = -(-rollouts // cfg.rollout.num_engines)
    if cfg.rollout.max_num_seqs and cfg.rollout.max_num_seqs < per_engine:
        warnings.append(
            f"rollout.max_num_seqs = {cfg.rollout.max_num_seqs} is below the {per_engine} sequences each engine "
            f"gets per step (data.batch_size x algo.group_size / rollout.num_engines): vLLM queues the rest, "
            f"so generation takes {-(-per_engine // cfg.rollout.max_num_seqs)} engine passes"
        )
    if cfg.eval.every and cfg.eval.every > cfg.train.steps > 0:
        warnings.append(f"eval.every = {cfg.eval.every} exceeds train.steps = {cfg.train.steps}: "
                        "no evaluation runs between the first and the last")
    max_tokens = cfg.eval.max_tokens or cfg.rollout.max_tokens
    if max(cfg.rollout.max_tokens, max_tokens) >= cfg.rollout.max_model_len:
        warnings.append(f"rollout.max_tokens / eval.max_tokens ({max(cfg.rollout.max_tokens, max_tokens)}) leave no "
                        f"room for the prompt in rollout.max_model_len = {cfg.rollout.max_model_len}")
    return warnings


def one_line(e: BaseException) -> str:
    """An exception's first line (its type's name when it has no message): for one-line errors."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
