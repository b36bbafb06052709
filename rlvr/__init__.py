"""rlvr: reinforcement learning with verifiable rewards."""
