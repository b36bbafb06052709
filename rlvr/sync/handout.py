"""The learner's side of weight sync: one object, held by the learner actor, that hands its weights to
each transport of `rlvr/sync/transports.py`.

    handout = WeightHandout(learner._weights, dtype=torch.bfloat16)   # the learner's one weights seam
    handout.named_weights()                      # ObjectStoreSync: HF-named CPU copies in the engines' dtype
    handout.write_shared(); handout.unlink_shared()   # SharedMemorySync: the /dev/shm file (rlvr/sync/shared_memory.py)
    handout.open_sender(workers, tp_sizes, "nccl", timeout_s); handout.send()   # TransferSync (vLLM's API)

`weights()` returns the full weights the learner hands out, HF-named (under ZeRO-3 rank 0's gathered copy,
a LoRA model's merged weights, else the module's own parameters); the handout never asks which: every
transport reads them through it, cast to `dtype` (the engines').
"""

from __future__ import annotations

from collections.abc import Callable

import ray
import torch

from rlvr.sync.shared_memory import Manifest, SharedWeightsWriter
from rlvr.sync.transports import open_weight_sender

Weights = Callable[[], list[tuple[str, torch.Tensor]]]


class WeightHandout:
    def __init__(self, weights: Weights, dtype: torch.dtype) -> None:
        self.weights, self.dtype = weights, dtype
        self.shared: SharedWeightsWriter | None = None  # the file is made on the first sync, and kept
        self.sender = None  # vLLM's trainer-side weight-transfer engine, once opened

    def named_weights(self) -> dict[str, torch.Tensor]:
        """HF-named parameters (tied weights once, LoRA merged) on CPU in the engines' dtype, for the
        object-store sync."""
        return {name: p.detach().to("cpu", dtype=self.dtype, copy=True) for name, p in self.weights()}

    def write_shared(self) -> Manifest:
        """Write the weights into this process's shared-memory file; returns its `Manifest`."""
        weights = self.weights()
        if self.shared is None:
            self.shared = SharedWeightsWriter(weights, self.dtype, ray.get_runtime_context().get_node_id())
        return self.shared.write(weights)

    def unlink_shared(self) -> None:
        if self.shared is not None:
            self.shared.unlink()

    def open_sender(self, workers: list, tp_sizes: list[int], backend: str = "nccl", timeout_s: float = 600.0) -> None:
        """Open the weight-transfer group with the engines (`open_weight_sender`): this process is its rank 0."""
        self.sender = open_weight_sender(self.weights, workers, tp_sizes, backend=backend, dtype=self.dtype,
                                         timeout_s=timeout_s)

    def send(self) -> None:
        if self.sender is None:
            raise RuntimeError("send before open_sender: the weight-transfer group is not open")
        self.sender.send_weights()
