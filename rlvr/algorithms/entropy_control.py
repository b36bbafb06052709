"""The entropy bonus's coefficient per RL step: constant, a linear schedule, or adaptive to a target.

RL on verifiable rewards collapses the policy's entropy within a few hundred steps (1-shot RLVR, Wang et
al. 2025, Sec. 4; CEEH in the seeds); a fixed bonus large enough to stop it early is too large later.
`adaptive` holds a target entropy the way Skywork-OR1 (He et al. 2025, Sec. 3.2.4, "adaptive entropy
control") and SAC's temperature tuning (Haarnoja et al. 2018, eq. 18) do: after each step,

    coef <- max(0, coef + lr * (target - entropy))

so the bonus grows while entropy is below the target and fades to 0 above it.

`linear` runs from `coef` to `coef_end` over `total_steps` (the run's `train.steps`). Its length is part
of the resumable state: a run resumed with another `train.steps` keeps the schedule it started with
(past its end the coefficient stays at `coef_end`) instead of stretching it silently.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EntropyControl:
    schedule: str  # "constant" | "linear" | "adaptive"
    coef: float
    coef_end: float = 0.0
    target: float = 0.0
    lr: float = 0.01
    total_steps: int = 1

    def value(self, step: int) -> float:
        if self.schedule == "linear":
            frac = min(1.0, step / max(1, self.total_steps - 1))
            return self.coef + frac * (self.coef_end - self.coef)
        return self.coef

    def update(self, entropy: float) -> None:
        """After a step, with the step's mean token entropy (nats)."""
        if self.schedule == "adaptive":
            self.coef = max(0.0, self.coef + self.lr * (self.target - entropy))

    def state(self) -> dict:
        return {"coef": self.coef, "total_steps": self.total_steps}

    def restore(self, state: dict) -> None:
        self.coef = float(state["coef"])
        self.total_steps = int(state.get("total_steps", self.total_steps))  # older checkpoints: as configured
