"""builtin:tiny-char-teacher: the demo task's teacher for on-policy distillation, built on first use.

Wider (128 vs 96) and deeper (4 vs 3 layers) than the demo student, SFT'd twice as long on the demo task
(examples/tiny_arith_grpo.toml's chain_sum), from its own data seed. The build (~3 min on 2 cores) saves
its progress every PROGRESS_EVERY steps in its folder; a build interrupted there continues from the last
save and ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rlvr.models.tiny import TinyShape, build_tiny_model

TEACHER_SHAPE = TinyShape(hidden=128, layers=4, heads=4, seed=1)
TEACHER_SFT_STEPS = 800
PROGRESS_EVERY = 80  # SFT steps between saves (~17 s on 2 cores): at most a tenth of the build is lost
TEACHER_TASK = dict(source="reasoning_gym:chain_sum", prompt_key="metadata.expression",
                    task_kwargs=dict(min_terms=2, max_terms=4, min_digits=1, max_digits=1))
TEACHER_TEMPLATE = "{prompt} ="


def build_tiny_teacher(out: str | Path, say: Callable[[str], None] = print, *, steps: int = TEACHER_SFT_STEPS,
                       every: int = PROGRESS_EVERY, batch: int = 64) -> None:
    """Build the tiny teacher into `out`: a fresh tiny model, then `steps` SFT steps of `batch` pairs on the
    demo task, continuing from `out`/progress.pt when an earlier build left one there."""
    import torch

    from rlvr.algorithms.losses import LossConfig
    from rlvr.data.sources import load_splits
    from rlvr.learner.actor import Learner
    from rlvr.learner.optim import OptimSpec

    out = Path(out)
    progress = out / "progress.pt"
    build_tiny_model(out, TEACHER_SHAPE)  # deterministic, so rebuilt rather than trusted after a crash
    splits = load_splits(**TEACHER_TASK, train_size=64, eval_size=16, seed=7, sft_size=min(20_000, steps * batch))
    learner = Learner.__ray_actor_class__(str(out), optim=OptimSpec(lr=2e-3), loss=LossConfig(), threads=0)
    optim = OptimSpec(lr=2e-3, warmup_steps=40, decay_steps=steps - 40)
    learner.start_sft(splits.sft, batch_size=batch, prompt_template=TEACHER_TEMPLATE, system_prompt="",
                      response_template="{answer}", optim=optim, seed=7)
    done = 0
    if progress.exists():
        state = torch.load(progress, weights_only=True)
        learner.model.load_state_dict(state["model"])
        learner.sft.load_state_dict(state["sft"])
        done = state["steps"]
        say(f"tiny-char-teacher: resuming at step {done}/{steps} from {progress}")
    while done < steps:
        n = min(every, steps - done)
        loss = learner.sft_steps(n)["sft/loss"]
        done += n
        tmp = progress.with_suffix(".tmp")
        torch.save({"steps": done, "model": learner.model.state_dict(), "sft": learner.sft.state_dict()}, tmp)
        os.replace(tmp, progress)
        say(f"tiny-char-teacher: {done}/{steps} SFT steps, loss {loss:.3f}")
    learner.save(str(out))
    progress.unlink()
