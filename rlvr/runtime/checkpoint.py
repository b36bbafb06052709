"""Atomic saves: nothing a crash leaves behind looks like a complete checkpoint when it is not."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def save_hf_atomic(model: Any, tokenizer: Any, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """`save_pretrained` into a temporary folder beside `out_dir`, then move the files in.

    A new `out_dir` appears whole (one rename). An existing one (the run folder, which also holds
    metrics.jsonl) receives each file by an atomic rename, config.json last, so a reader never finds
    a config.json whose weights are missing or half written.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if not out.exists():
            os.rename(tmp, out)
            return out
        files = sorted(tmp.iterdir(), key=lambda f: f.name == "config.json")
        for f in files:
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary sibling and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
