"""Weights through one shared-memory file: the learner writes, engines on its node read without a copy.

The object store moves a model three times per sync (the learner's copy, `ray.put`'s serialisation into
plasma, each worker's `ray.get`): 1.7 s of SmolLM2-135M's 2.0-2.6 s. Here the learner copies its
parameters, cast to the engines' dtype, into one file under /dev/shm (tmpfs: memory, no disk), the
same file every step; only a `Manifest` of names, offsets, shapes and dtypes goes through Ray. An
engine maps the file once and hands `load_weights` views into the mapping, so the bytes are copied
twice in all (learner -> file, file -> engine parameters).

Lifetime: the file is unlinked as soon as every engine has mapped it (`SharedWeightsWriter.unlink`,
called by `SharedMemorySync` at the end of its first push, failed or not). The pages then live exactly as
long as the processes that map them, so neither a clean exit nor a `kill -9` leaves a file behind. Only a
learner killed during the first push leaves one `/dev/shm/rlvr-weights-*` file (a normal exit removes it).
An engine started later cannot join: it would need a new file.

One file means one sync in flight: the learner must not write step k+1 while engines still read step k.
The loop is synchronous (`push` waits for every engine); an asynchronous trainer needs two files.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

ALIGN = 64  # bytes; every tensor starts on a cache line, so its view is aligned for any dtype
SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class Manifest:
    """Where each tensor of one sync lies in the file (offsets in bytes)."""

    path: str
    nbytes: int
    node_id: str  # Ray node of the writer: only engines on this node can map the file
    names: tuple[str, ...]
    offsets: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str  # one dtype for all tensors: the engines'


def _layout(shapes: list[tuple[int, ...]], itemsize: int) -> tuple[list[int], int]:
    offsets, end = [], 0
    for shape in shapes:
        offsets.append(end)
        numel = 1
        for d in shape:
            numel *= d
        end += -(-numel * itemsize // ALIGN) * ALIGN
    return offsets, end


def _map(path: str, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
    """The file as a flat tensor of `dtype`, writes going to the shared pages (MAP_SHARED)."""
    storage = torch.UntypedStorage.from_file(path, shared=True, nbytes=nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (nbytes // dtype.itemsize,))


class SharedWeightsWriter:
    """Learner side: owns the file, rewrites it in place each sync."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype, node_id: str) -> None:
        pairs = [(n, tuple(t.shape)) for n, t in named]
        self.names = tuple(n for n, _ in pairs)
        self.shapes = tuple(s for _, s in pairs)
        self.dtype = dtype
        offsets, self.nbytes = _layout(list(self.shapes), dtype.itemsize)
        self.offsets = tuple(offsets)
        self.path = os.path.join(SHM_DIR, f"rlvr-weights-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        with open(self.path, "wb") as f:
            f.truncate(self.nbytes)
        self.flat = _map(self.path, self.nbytes, dtype)
        self.node_id = node_id
        atexit.register(self.unlink)

    def write(self, named: Iterable[tuple[str, torch.Tensor]]) -> Manifest:
        """Copy the tensors into the file (cast to the engines' dtype on the way); same names, same order."""
        count = 0
        for (name, tensor), expected, offset, shape in zip(named, self.names, self.offsets, self.shapes):
            if name != expected or tuple(tensor.shape) != shape:
                raise ValueError(f"shared weights: got {name} {tuple(tensor.shape)}, the file holds {expected} {shape}")
            start = offset // self.dtype.itemsize
            self.flat[start: start + tensor.numel()].view(shape).copy_(tensor.detach())
            count += 1
        if count != len(self.names):
            raise ValueError(f"shared weights: {count} tensors written, the file holds {len(self.names)}")
        return Manifest(self.path, self.nbytes, self.node_id, self.names, self.offsets, self.shapes,
                        str(self.dtype).removeprefix("torch."))

    def unlink(self) -> None:
        """Remove the file's name; mappings already made stay valid (the pages go with the last of them)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SharedWeightsReader:
    """Engine side: maps the file on first use and keeps the mapping, so later syncs fault in no pages."""

    def __init__(self) -> None:
        self.path, self.flat = "", None

    def tensors(self, m: Manifest) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, view into the shared file) for every tensor of the manifest; valid until the next write."""
        if m.path != self.path:
            self.flat = _map(m.path, m.nbytes, getattr(torch, m.dtype))
            self.path = m.path
        itemsize = self.flat.dtype.itemsize
        for name, offset, shape in zip(m.names, m.offsets, m.shapes):
            numel = 1
            for d in shape:
                numel *= d
            yield name, self.flat[offset // itemsize: offset // itemsize + numel].view(shape)
