"""Reward terms: the plugin API and the built-in verifiers and length shapers.

    from rlvr.rewards import register, RewardResult

    @register("short")
    def short(rollout) -> float:
        return float(rollout.num_tokens < 100)

See protocol.py for the contract and registry.py for the three ways to name a reward.
"""

from rlvr.rewards.protocol import GroupRewardFn, PassRateGroupRewardFn, RewardFn, RewardResult
from rlvr.rewards.registry import register, registered, resolve

__all__ = ["GroupRewardFn", "PassRateGroupRewardFn", "RewardFn", "RewardResult", "register", "registered", "resolve"]
