"""The two update backends apply the same update: plain torch AdamW and DeepSpeed ZeRO on gloo (CPU)."""

import math

import pytest
import ray
import torch

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec, schedule
from rlvr.types import Rollout, Sample, ScoredRollout, TermResult


def test_schedule_warmup_then_cosine_to_ten_percent():
    f = schedule(OptimSpec(lr=1.0, warmup_steps=4, decay_steps=10))
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and math.isclose(f(9), 0.55) and math.isclose(f(14), 0.1) and f(100) == pytest.approx(0.1)
    assert schedule(OptimSpec(lr=1.0))(50) == 1.0


def batch():
    torch.manual_seed(0)
    rows = []
    for i in range(6):
        sample = Sample(id=str(i), prompt="", answer="")
        completion = tuple(torch.randint(0, 250, (3 + i % 3,)).tolist())
        rollout = Rollout(sample, "", "stop", completion, (-1.0,) * len(completion), (257, 20 + i // 2, 258), 0)
        rows.append(ScoredRollout(rollout, float(i % 2), {"t": TermResult(float(i % 2))}))
    groups = [rows[i : i + 2] for i in range(0, len(rows), 2)]
    return make_train_batch(groups, [[1.0 if r.reward else -1.0 for r in g] for g in groups])


@pytest.mark.ray
@pytest.mark.parametrize("stage", [0, 2])
def test_deepspeed_matches_torch(ray_cluster, tiny_model, stage):
    common = dict(optim=OptimSpec(lr=1e-2), loss=LossConfig(), micro_batch_size=4, threads=1, minibatches=2)
    learners = [Learner.remote(tiny_model, **common), Learner.remote(tiny_model, backend="deepspeed", zero_stage=stage, **common)]
    data = batch()
    for _ in range(2):
        metrics = ray.get([learner.train_step.remote(data) for learner in learners])
    assert metrics[0]["grad_norm"] == pytest.approx(metrics[1]["grad_norm"], rel=1e-4)
    plain, deepspeed = ray.get([learner.named_weights.remote() for learner in learners])
    # Adam moves every weight by about lr per step whatever its gradient's size, so ZeRO's different
    # reduction order shows up at a small fraction of lr, not at float epsilon.
    for name in plain:
        assert torch.allclose(plain[name], deepspeed[name], atol=5e-4), name  # lr = 1e-2
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-4, abs=1e-6)
    for learner in learners:
        ray.kill(learner)


def test_deepspeed_on_cpu_does_not_build_the_shared_memory_allreduce_op(monkeypatch):
    """The op serves DeepSpeed's inference all-reduce only; building it is ~50 s of C++ on a machine's first
    DeepSpeed start (CI's every run). What DeepSpeed's comm backend calls when it starts must not build it."""
    import importlib

    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    from rlvr.learner.optim import _skip_shared_memory_allreduce_build

    def build(self, *args, **kwargs):
        raise AssertionError("the shared-memory all-reduce op was built")

    monkeypatch.setattr(ShareMemCommBuilder, "load", build)
    comm = importlib.import_module("deepspeed.comm.torch")
    monkeypatch.setattr(comm, "build_shm_op", comm.build_shm_op)  # restored after the test
    _skip_shared_memory_allreduce_build()
    assert comm.build_shm_op() is None
