"""builtin:tiny-char-teacher: the demo task's teacher for on-policy distillation, built on first use.

Wider (128 vs 96) and deeper (4 vs 3 layers) than the demo student, SFT'd twice as long on the demo task
(examples/tiny_arith_grpo.toml's chain_sum), from its own data seed.
"""

from __future__ import annotations

from rlvr.models.tiny import TinyShape, build_tiny_model

TEACHER_SHAPE = TinyShape(hidden=128, layers=4, heads=4, seed=1)
TEACHER_SFT_STEPS = 800
TEACHER_TASK = dict(source="reasoning_gym:chain_sum", prompt_key="metadata.expression",
                    task_kwargs=dict(min_terms=2, max_terms=4, min_digits=1, max_digits=1))
TEACHER_TEMPLATE = "{prompt} ="


def build_tiny_teacher(out) -> None:
    """Build the tiny teacher into `out`: a fresh tiny model, then SFT on the demo task (~2-3 min, 2 cores)."""
    from rlvr.algorithms.losses import LossConfig
    from rlvr.data.sources import load_splits
    from rlvr.learner.actor import Learner
    from rlvr.learner.optim import OptimSpec

    build_tiny_model(out, TEACHER_SHAPE)
    batch = 64
    splits = load_splits(**TEACHER_TASK, train_size=64, eval_size=16, seed=7, sft_size=20_000)
    learner = Learner.__ray_actor_class__(str(out), optim=OptimSpec(lr=2e-3), loss=LossConfig(), threads=0)
    optim = OptimSpec(lr=2e-3, warmup_steps=40, decay_steps=TEACHER_SFT_STEPS - 40)
    learner.start_sft(splits.sft, batch_size=batch, prompt_template=TEACHER_TEMPLATE, system_prompt="",
                      response_template="{answer}", optim=optim, seed=7)
    metrics = learner.sft_steps(TEACHER_SFT_STEPS)
    print(f"built {out}: {TEACHER_SFT_STEPS} SFT steps, final loss {metrics['sft/loss']:.3f}", flush=True)
    learner.save(str(out))
