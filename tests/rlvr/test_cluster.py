"""Placement on fake GPUs: the session cluster advertises 4 GPU resources on this CPU machine."""

import os

import pytest
import ray

from rlvr.cluster import placement
from rlvr.config import load_config

pytestmark = pytest.mark.ray


@ray.remote
class Probe:
    def where(self):
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_learner_and_engines_get_disjoint_gpus(ray_cluster):
    cfg = load_config(None, ["learner.gpus=1", "rollout.gpus_per_engine=1", "rollout.num_engines=3"])
    learner_opts, engine_opts = placement(cfg)
    assert len(engine_opts) == 3
    probes = [Probe.options(**o).remote() for o in [learner_opts, *engine_opts]]
    seen = ray.get([p.where.remote() for p in probes])
    ids = [tuple(gpu_ids) for gpu_ids, _ in seen]
    assert all(len(i) == 1 for i in ids) and len(set(ids)) == 4
    assert all(visible == ",".join(str(g) for g in gpu_ids) for gpu_ids, visible in seen)
    for p in probes:
        ray.kill(p)
    ray.util.remove_placement_group(learner_opts["scheduling_strategy"].placement_group)


def test_tensor_parallel_engine_gets_two_gpus(ray_cluster):
    cfg = load_config(None, ["learner.gpus=2", "rollout.gpus_per_engine=2"])
    learner_opts, (engine_opts,) = placement(cfg)
    probe = Probe.options(**engine_opts).remote()
    gpu_ids, _ = ray.get(probe.where.remote())
    assert len(gpu_ids) == 2
    ray.kill(probe)
    ray.util.remove_placement_group(learner_opts["scheduling_strategy"].placement_group)


def test_request_larger_than_cluster_fails_clearly(ray_cluster):
    cfg = load_config(None, ["learner.gpus=4", "rollout.gpus_per_engine=4"])
    with pytest.raises(RuntimeError, match="cannot hold the requested GPUs"):
        placement(cfg, timeout_s=2)


def test_cpu_roles_need_no_placement_group():
    learner_opts, engine_opts = placement(load_config(None, []))
    assert learner_opts["num_cpus"] == 0 and "scheduling_strategy" not in learner_opts
    assert len(engine_opts) == 1
    with pytest.raises(ValueError, match="mixing CPU and GPU roles"):
        placement(load_config(None, ["rollout.gpus_per_engine=1"]))
