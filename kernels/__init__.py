"""Learner kernels: fused log-prob + entropy (from hidden states or from logits) and the policy loss.

Each module holds a plain-torch reference, Triton kernels, an autograd Function and one public
function that runs Triton on CUDA tensors and a torch path elsewhere (`backend=`, or `loss.kernel` for
the loss, overrides). The functions load on first use, so importing the package loads neither torch nor
triton.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module. The modules are named unlike the functions: importing a submodule binds its
# name on the package, which would shadow a function of the same name.
_HOME = {
    "linear_logprobs": "fused_linear",
    "linear_logprobs_reference": "fused_linear",
    "logits_logprobs": "selective_log_softmax",
    "logits_logprobs_reference": "selective_log_softmax",
    "policy_loss": "fused_loss",
}

__all__ = [*_HOME]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"rlvr.kernels.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlvr.kernels' has no attribute {name!r}")
