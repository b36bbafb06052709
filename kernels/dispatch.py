"""Which implementation a kernel call runs: the Triton kernel or the chunked torch path.

"auto" picks Triton when every tensor is on a CUDA device and torch elsewhere. "triton" forces the
kernel; on CPU tensors it only works under the Triton interpreter, which reads TRITON_INTERPRET=1
when the kernel modules are imported (the `@triton.jit` decorator checks it), so tests set it first.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]

# The chunked torch paths size their work buffers so one fp32 buffer holds about this many elements
# (2**24 * 4 bytes = 64 MiB): large enough that per-chunk overhead vanishes, small enough that the
# two buffers they need stay far below the naive path's [N, V] tensors. The Triton backward of
# linear_logprobs uses it for its dz chunk too. Read at call time, so tests can shrink it.
CHUNK_ELEMENTS = 1 << 24
# linear_logprobs' torch backward takes vocabulary chunks at least this wide, so its matmuls stay
# efficient when N is large (rows are then tiled as well).
MIN_CHUNK_COLS = 256


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# The kernels were decorated in interpreter mode iff it was on when this package was imported.
KERNELS_INTERPRETED = interpreting()


def use_triton(backend: Backend, *tensors: torch.Tensor | None) -> bool:
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if backend == "torch":
        return False
    if backend == "triton":
        if not on_cuda and not KERNELS_INTERPRETED:
            raise RuntimeError(
                "backend='triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 "
                "before the kernel modules are imported"
            )
        return True
    return on_cuda


def no_autocast(tensor: torch.Tensor):
    """The kernels pick their precisions themselves (matmuls in the input dtype, the rest in fp32):
    a caller's autocast region must not recast their internal matmuls, e.g. the fp32 batched dot
    of the entropy to bf16. Used around the bodies of the autograd Functions."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
