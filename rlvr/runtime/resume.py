"""Resumable checkpoints: DIR/checkpoints/step_NNNNNN/, each written whole or not at all; and whether a run
in DIR starts afresh, resumes, or is refused.

    how = plan_start(out, "auto", to_dict(cfg), cfg.train, timeout_s)  # the CLI, before anything starts
    if how.clear:                                                       # --overwrite, or auto's fresh start
        clear_run(out, keep_log=how.keep_log)
    ckpt = Checkpoints(out, cfg.train, timeout_s=cfg.cluster.call_timeout_s)
    resumed = ckpt.latest(to_dict(cfg))              # --resume: before Ray starts; errors name DIR or the keys
    start, driver = resumed.restore(parts)           # learner, critic, reward shapers, tracker, prompts, RNGs
    ckpt.save(step + 1, parts, driver)               # every train.save_every steps and at a Ctrl-C; prunes to train.keep_last

A checkpoint of step N (N RL steps done; the run continues with step N) holds

    learner/      every learner rank's `save_state` (rlvr/learner/actor.py): model/ (a plain HF folder, fp32
                  master weights), rank_R/ (optimizer, scheduler, RNG, step counter, entropy control) or
                  deepspeed/ (DeepSpeed's own format, sharded by rank)
    stage/        the advantage stage's state (rlvr/algorithms/estimate.py): PPO's value model and its optimizer
                  (rlvr/learner/critic.py), pi_ref as reference.safetensors (the policy as RL began), when the run has them
    driver.json   the step, the prompt source's position, the pass-rate tracker, the reward shapers' state,
                  the per-step rewards and the summary so far (the evaluation before RL is not repeated),
                  the driver's python / numpy / torch RNG states
    COMPLETE      written last

Atomicity: everything goes into a hidden temporary folder beside the final one; its files are fsynced,
then the COMPLETE marker is written and fsynced, then one rename gives the folder its step name. A
process killed at any point (kill -9) leaves either a `.step_*.tmp-*` folder or a step folder without
the marker: neither is ever picked up, and the next save or resume removes stale temporaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from rlvr.config import TrainConfig

MARKER = "COMPLETE"
_STEP = re.compile(r"^step_(\d+)$")

# Keys that may differ between a run and its resumption: bookkeeping, logging and where things run.
# Everything else changes what the continued run computes, so a difference is an error naming the key.
# train.steps may differ: the schedules that span it keep the length they started with (the entropy
# control's is in its state, rlvr/algorithms/entropy_control.py; the learning rate's warm-up does not
# depend on it), so a longer run goes on at the schedule's end value.
MAY_DIFFER = ("train.steps", "train.save_every", "train.keep_last", "train.loggers", "cluster.", "eval.every",
              "eval.n", "eval.k", "eval.temperature", "eval.max_tokens", "reward.workers", "reward.timeout_s",
              "reward.worker_memory_mb", "reward.recycle_after", "reward.max_failed_frac")


class ResumeError(RuntimeError):
    """A run that may not start as asked (no checkpoint, a changed config, a folder in use): one line."""

    def __init__(self, message: str, kind: str = "resume") -> None:
        super().__init__(message)
        self.kind = kind  # the CLI prints "rlvr: <kind> error: ..."


# A folder holds a run when it has one of these: a fresh run there would truncate the metrics, and a later
# --resume would pick the old run's checkpoints. Other files (a log the caller wrote there) do not count.
RUN_MARKERS = ("metrics.jsonl", "run_config.json", "checkpoints")
# Everything `rlvr train` writes into its folder, the final weights being a Hugging Face folder's files:
# what --overwrite removes, and nothing else.
RUN_FILES = (*RUN_MARKERS, "run.log", "summary.json", "sft.json", "curriculum_state.json", "tensorboard", "wandb",
             "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
             "chat_template.jinja", "vocab.json", "merges.txt")
StartMode = Literal["fresh", "overwrite", "resume", "auto"]


@dataclass(frozen=True)
class Start:
    """How a run starts in its folder (`plan_start`)."""

    checkpoint: Path | None = None  # resume from this one, the newest complete checkpoint
    clear: bool = False  # remove the folder's earlier run first (`clear_run`)
    keep_log: bool = False  # ...but keep its run.log (--resume=auto: the log of the attempt that died)


def held_run(out: Path) -> list[str]:
    """The `RUN_MARKERS` present in `out` ("checkpoints/" for the folder)."""
    return [name + ("/" if (out / name).is_dir() else "") for name in RUN_MARKERS if (out / name).exists()]


def plan_start(out: Path, mode: StartMode, config: Mapping[str, Any], train: TrainConfig, timeout_s: float) -> Start:
    """Decide, before anything starts, how the run starts in `out`; a ResumeError naming the fix when it may not.

    fresh: refused where `out` holds a run. overwrite: that run's files are removed first. resume: the newest
    complete checkpoint, which must exist (`Checkpoints.latest`). auto (what a requeued job passes): resume
    when a complete checkpoint exists, else start afresh, over an earlier attempt of the same config only (a
    finished run without a checkpoint is refused: its results are not deleted).
    """
    if mode == "resume" or (mode == "auto" and complete_checkpoints(out / "checkpoints")):
        return Start(Checkpoints(out, train, timeout_s).latest(config).path)  # raises: none, or a changed config
    held = held_run(out)
    if not held or mode == "overwrite":  # overwrite: the run's other files go too, where its markers are gone
        return Start(clear=mode == "overwrite")
    if mode == "fresh":
        raise ResumeError(f"{out} holds a run ({', '.join(held)}): pass --resume to continue it or --overwrite to "
                          "replace it (or another --output-dir)", kind="output-dir")
    saved = out / "run_config.json"
    differences = config_differences(json.loads(saved.read_text()), config) if saved.exists() else [
        f"{saved.name} is missing"]
    if differences:
        raise ResumeError(f"--resume=auto: {out} holds a run without a complete checkpoint whose config differs "
                          f"({'; '.join(differences)}): pass --overwrite to replace it (or another --output-dir)")
    if (out / "summary.json").exists():  # it finished (save_every = 0): starting afresh would delete its results
        raise ResumeError(f"--resume=auto: {out} holds a finished run (summary.json) and no checkpoint to continue "
                          "from: nothing to resume; pass --overwrite to run it again", kind="output-dir")
    return Start(clear=True, keep_log=True)  # the same run, which died before its first checkpoint


def clear_run(out: Path, *, keep_log: bool = False) -> list[Path]:
    """Remove the `RUN_FILES` of `out` (run.log too unless `keep_log`); returns what was removed."""
    removed = sorted({p for pattern in RUN_FILES if not (keep_log and pattern == "run.log") for p in out.glob(pattern)})
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return removed


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / MARKER).is_file()]
    return sorted(found)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Remove all but the newest `keep_last` complete checkpoints (0: keep all), and stale temporaries."""
    removed = [p for p in root.glob(".step_*.tmp-*")]
    if keep_last:
        removed += [p for _, p in complete_checkpoints(root)[:-keep_last]]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success fsync it, write the marker last and rename it to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        with (tmp / MARKER).open("w") as f:
            f.write(final.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        if final.exists():  # a step folder without its marker (moved by hand, or a lost marker): replaced whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """"key: old -> new" for every dotted key that differs and is not in MAY_DIFFER."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys
            if old.get(k) != new.get(k) and not any(k == m or (m.endswith(".") and k.startswith(m)) for m in MAY_DIFFER)]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value and prefix.count(".") < 1:  # sections only; task_kwargs stays whole
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def rng_state() -> dict[str, Any]:
    """The driver's python, numpy and torch RNG states as JSON-friendly lists (no pickle to load back)."""
    import numpy as np
    import torch  # here: the CLI decides how a run starts (`plan_start`) without paying for torch's import

    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(words), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
            "torch": torch.get_rng_state().tolist()}


def restore_rng(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


class Resumable(Protocol):
    """A part with a resumable state of its own under a folder: the learner group (every rank's part)."""

    def save_state(self, out_dir: str) -> str: ...

    def load_state(self, in_dir: str) -> int: ...


class ShaperState(Protocol):
    """The reward service's group shapers (a `Scorer`, or `ShaperStates` around the RewardService actor)."""

    def shaper_state(self) -> dict[str, Any]: ...

    def set_shaper_state(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class Parts:
    """What a checkpoint reads and writes besides the driver's own records.

    learner: the learner group (`save_state(dir)` / `load_state(dir)` call every rank's, with its deadline);
    stage: the advantage stage (rlvr/algorithms/estimate.py; PPO's saves its critic); reward_service: the
    reward shapers' state (rlvr/scoring/service.py `ShaperStates`); tracker, prompts: the driver's
    PassRateTracker and prompt source (rlvr/data/curriculum.py).
    """

    learner: Resumable
    stage: Any
    reward_service: ShaperState
    tracker: Any
    prompts: Any


@dataclass(frozen=True)
class Resumed:
    step: int
    path: Path
    timeout_s: float

    def restore(self, parts: Parts) -> dict[str, Any]:
        """Load every part's state from the checkpoint; returns the driver's records (rewards, summary, ...)."""
        driver = json.loads((self.path / "driver.json").read_text())
        if driver["step"] != self.step:
            raise ResumeError(f"{self.path}: driver.json says step {driver['step']}, the folder step {self.step}")
        parts.learner.load_state(str(self.path / "learner"))
        parts.stage.load_state(self.path / "stage")
        parts.reward_service.set_shaper_state(driver["shapers"])
        parts.tracker.restore(driver["tracker"])
        parts.prompts.restore(driver["prompts"])
        restore_rng(driver["rng"])
        return driver["records"]


class Checkpoints:
    """DIR/checkpoints: saving every `save_every` steps, pruning to `keep_last`, finding the newest to resume."""

    def __init__(self, out: Path, cfg: TrainConfig, timeout_s: float) -> None:
        self.out, self.root = out, out / "checkpoints"
        self.save_every, self.keep_last, self.timeout_s = cfg.save_every, cfg.keep_last, timeout_s

    def due(self, steps_done: int) -> bool:
        return bool(self.save_every) and steps_done % self.save_every == 0

    def latest(self, config: Mapping[str, Any]) -> Resumed:
        """The newest complete checkpoint, after checking `config` against DIR/run_config.json."""
        found = complete_checkpoints(self.root)
        if not found:
            partial = sorted(p.name for p in self.root.glob("*step_*")) if self.root.is_dir() else []
            raise ResumeError(f"--resume: no complete checkpoint in {self.root}" + (
                f" (incomplete, ignored: {', '.join(partial)})" if partial else
                " (train.save_every and a Ctrl-C or SIGTERM during RL write them)"))
        saved_config = self.out / "run_config.json"
        if saved_config.exists():
            differences = config_differences(json.loads(saved_config.read_text()), config)
            if differences:
                raise ResumeError(f"--resume: the config differs from {saved_config} in keys that change the run: "
                                  + "; ".join(differences))
        step, path = found[-1]
        return Resumed(step, path, self.timeout_s)

    def save(self, step: int, parts: Parts, records: Mapping[str, Any]) -> Path:
        """Write checkpoint `step` (steps done) atomically, then prune; returns its folder."""
        final = step_dir(self.root, step)
        with atomic_dir(final) as tmp:
            parts.learner.save_state(str(tmp / "learner"))
            parts.stage.save_state(tmp / "stage")
            shapers = parts.reward_service.shaper_state()
            driver = {"step": step, "prompts": dict(parts.prompts.state), "tracker": parts.tracker.state(),
                      "shapers": shapers, "records": dict(records), "rng": rng_state()}
            (tmp / "driver.json").write_text(json.dumps(driver, sort_keys=True) + "\n")
        prune(self.root, self.keep_last)
        return final
