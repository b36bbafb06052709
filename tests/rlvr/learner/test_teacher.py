"""The distillation teacher (in this process): its scores, and the student moving toward it."""

import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlvr.algorithms.batch import make_train_batch
from rlvr.algorithms.token_advantages import Distillation
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.learner.teacher import Teacher

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, assert_equals_full_forward, groups_of  # noqa: E402

TeacherClass, LearnerClass = Teacher.__ray_actor_class__, Learner.__ray_actor_class__


def test_teacher_scores_like_a_full_forward(tiny_model):
    teacher = TeacherClass(tiny_model, threads=2, micro_batch_size=1)
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    got = teacher.logprobs(batch)
    assert_equals_full_forward(got, tiny_model)


def test_distillation_pulls_the_student_toward_the_teacher(tiny_model, tmp_path):
    """Advantage log pi_T - log pi_old on each sampled token: the reverse KL to the teacher falls."""
    torch.manual_seed(3)
    teacher_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in teacher_model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    teacher_model.save_pretrained(tmp_path)
    teacher = TeacherClass(str(tmp_path), threads=2)
    learner = LearnerClass(tiny_model, optim=OptimSpec(lr=3e-3), loss=LossConfig(), threads=2,
                           token_advantages=(Distillation(coef=1.0),))
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    batch = batch.__class__(**{**batch.__dict__, "teacher_logprobs_B_Lc": teacher.logprobs(batch)})
    kls = [learner.train_step(batch)["distill/kl"] for _ in range(15)]
    assert kls[-1] < kls[0] - 0.05, kls
