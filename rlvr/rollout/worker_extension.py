"""Weight loading inside vLLM's worker processes, for the asynchronous engine (rlvr/rollout/async_worker.py).

`AsyncLLM` runs its model in another process, reached only through `collective_rpc(name, args=...)` with
msgpack-encoded plain data (no pickled callables). vLLM mixes this class into its worker class
(`worker_extension_cls`), so the methods below are callable by name there. Tensors travel as raw bytes
with their dtype and shape (the object-store path) or stay in the learner's shared-memory file, of which
only the `Manifest`'s fields travel (rlvr/sync/shared_memory.py).
"""

from __future__ import annotations

import warnings

import torch

QUALNAME = "rlvr.rollout.worker_extension.WeightLoading"


def to_wire(named_tensors: dict[str, torch.Tensor]) -> list[tuple[str, str, list[int], bytes]]:
    """(name, dtype, shape, bytes) per tensor: what msgpack carries without pickle."""
    return [(n, str(t.dtype).removeprefix("torch."), list(t.shape), t.detach().cpu().contiguous().view(-1)
             .view(torch.uint8).numpy().tobytes()) for n, t in named_tensors.items()]


def from_wire(wire) -> list[tuple[str, torch.Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffer: load_weights only reads it
        return [(n, torch.frombuffer(data, dtype=getattr(torch, dtype)).view(shape)) for n, dtype, shape, data in wire]


class WeightLoading:
    """Mixed into vLLM's worker: `self` is the worker, `self.model_runner` holds the model."""

    def rlvr_load_weights(self, wire) -> int:
        return self._rlvr_load(from_wire(wire))

    def rlvr_load_shared_weights(self, manifest: dict) -> int:
        from rlvr.sync.shared_memory import Manifest, SharedWeightsReader

        if getattr(self, "_rlvr_shared", None) is None:
            self._rlvr_shared = SharedWeightsReader()  # keeps the mapping across syncs
        return self._rlvr_load(self._rlvr_shared.tensors(Manifest(**manifest)))

    def _rlvr_load(self, tensors) -> int:
        """Load in place, then re-pack the CPU GEMM weights; returns the number of re-packed layers."""
        model = self.model_runner.get_model()
        model.load_weights(tensors)
        if self.device.type != "cpu":
            return 0
        from rlvr.rollout import vllm_cpu

        return vllm_cpu.repack_linear_weights(model)
