"""Learner kernels: fused log-prob + entropy (from hidden states or from logits) and the policy loss.

Each module holds a plain-torch reference, Triton kernels, an autograd Function and one public
function that runs Triton on CUDA tensors and a chunked torch path elsewhere (`backend=` overrides).
"""

from rlvr.kernels.linear_logprobs import linear_logprobs, linear_logprobs_reference
from rlvr.kernels.logits_logprobs import logits_logprobs, logits_logprobs_reference
from rlvr.kernels.policy_loss import PolicyLossConfig, policy_loss, policy_loss_reference

__all__ = [
    "PolicyLossConfig",
    "linear_logprobs",
    "linear_logprobs_reference",
    "logits_logprobs",
    "logits_logprobs_reference",
    "policy_loss",
    "policy_loss_reference",
]
