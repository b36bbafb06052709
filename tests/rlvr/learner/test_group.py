"""The learner group: N data-parallel ranks (torch.distributed over gloo) make the update one rank makes."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402

from rlvr.algorithms.batch import make_train_batch, pack
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.group import LearnerGroup, shard_prompts
from rlvr.learner.optim import OptimSpec


def test_shards_cover_every_prompt_once_and_leave_no_rank_idle():
    lengths = [5, 1, 1, 1, 9, 2, 2, 3, 3, 3]
    batch = pack([(1, 2)] * 5, [(1,) * n for n in lengths], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], [()] * 10, [0.0] * 10)
    for ranks in (1, 2, 3, 5):
        shards = shard_prompts(batch, ranks)
        assert torch.cat(shards).tolist() == list(range(5))  # contiguous, in order, each prompt once
        assert all(len(s) for s in shards)
    assert [len(s) for s in shard_prompts(batch, 7)].count(0) == 2  # more ranks than prompts: some idle


def _batch(model):
    from learner_cases import full_forward_logprobs
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model)
    true = [[tuple(full_forward_logprobs(hf, p, c).tolist()) for c in cs] for p, cs in zip(PROMPTS, COMPLETIONS)]
    groups = groups_of(PROMPTS, COMPLETIONS, logprobs=true)
    return make_train_batch(groups, [[1.0 if j == 0 else -0.5 * j for j in range(len(g))] for g in groups])


def _group(ray, model, ranks, **kwargs):
    actors = [
        Learner.options(num_cpus=0).remote(model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=1, **kwargs)
        for _ in range(ranks)
    ]
    group = LearnerGroup(actors, timeout_s=300, gather_for_sync=kwargs.get("zero_stage") == 3)
    group.ready()
    group.connect()
    group.start_rl()
    return group


def _weights(ray, group):
    return torch.cat([w.float().flatten() for _, w in sorted(ray.get(group.named_weights()).items())])


@pytest.mark.ray
@pytest.mark.parametrize("backend,stage,dtype,minibatches", [
    pytest.param("torch", 0, "float32", 1, marks=pytest.mark.slow),  # the cases below each add to it
    ("torch", 0, "bfloat16", 1), ("torch", 0, "float32", 2),
    pytest.param("deepspeed", 2, "float32", 1, marks=pytest.mark.slow),  # ZeRO-3's twin, without the gathers
    ("deepspeed", 3, "float32", 1)])  # one-token micro-batches on one rank once hung it (tests/rlvr/learner/test_forward.py)
def test_two_ranks_make_the_update_of_one(ray_cluster, tiny_model, tmp_path, backend, stage, dtype, minibatches):
    """Same loss, gradient norm and weights from 2 ranks as from 1 on the whole batch, with micro-batches
    (uneven work per rank: the padding micro-batches keep the collectives in step), and on a batch of one
    prompt (rank 1 idle: it joins every collective with nothing to add). With 2 minibatches and 2 epochs
    the ranks split the one shuffled prompt list alike, so minibatch j is the single rank's. In bf16 the sum runs over the
    fp32 master gradients; the tolerances are bf16's (a rank's forward rounds its own micro-batches)."""
    ray = ray_cluster
    batch = _batch(tiny_model)
    one_prompt = batch.select_prompts(torch.tensor([1]))
    kwargs = dict(micro_batch_size=2, minibatches=minibatches, epochs=minibatches, dtype=dtype)
    if backend == "deepspeed":
        kwargs |= dict(backend="deepspeed", zero_stage=stage)
    results = []
    for ranks in (1, 2):
        group = _group(ray, tiny_model, ranks, **kwargs)
        metrics = [group.train_step(b) for b in (batch, batch, one_prompt)]
        results.append((metrics, _weights(ray, group), group.logprobs(batch)))
        # the final export: rank 0 writes the full weights (under ZeRO-3 the ones the ranks gathered)
        saved = load_file(Path(group.save(str(tmp_path / f"ranks{ranks}"))) / "model.safetensors")
        assert torch.equal(torch.cat([saved[k].float().flatten() for k in sorted(saved)]), results[-1][1])
        for a in group.actors:
            ray.kill(a)
    (one, w1, lp1), (two, w2, lp2) = results
    # bf16: step 0 is the same update up to the rounding of each rank's own micro-batches; after it, Adam's
    # first steps (about lr per weight whatever the gradient's size) turn that rounding into weight noise.
    rel, later, weights, logprobs = (1e-4, 1e-4, 1e-6, 1e-5) if dtype == "float32" else (1e-3, 3e-2, 1e-3, 5e-2)
    if minibatches > 1:  # 12 Adam steps at lr 1e-2 magnify the ranks' other summation order in the log-probs
        logprobs = 5e-4
    for step in range(3):
        tol = rel if step == 0 else later
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=tol, abs=1e-7)
        assert two[step]["grad_norm"] == pytest.approx(one[step]["grad_norm"], rel=tol)
        assert two[step]["entropy"] == pytest.approx(one[step]["entropy"], rel=tol)
    assert (w1 - w2).abs().mean() <= weights
    assert torch.allclose(lp1, lp2, atol=logprobs)  # the group's log-probs: each rank scored its share
    assert one[1]["memory/learner_peak_gb"] > 0
