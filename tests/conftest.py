"""Shared fixtures. The default run is CPU-only and uses the real vLLM, Ray and math-verify."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports triton: without a GPU, kernels run in Triton's interpreter.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as a local run: ~/.ray/auth_token, written on first start
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RLVR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    """`shared_data("gsm8k/train.jsonl")`: a file of ../shared/data, or skip the test saying why."""

    def find(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.exists():
            pytest.skip(f"shared data not available: {path} (set RLVR_SHARED_DATA)")
        return path

    return find


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The builtin tiny character-level Qwen2 (random weights), built once per session."""
    from rlvr.models.tiny import TinyShape, build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyShape(hidden=64, layers=2, heads=2)))


def _start_session_ray():
    import ray

    # address="local": a new cluster even when another is running on this machine
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, object_store_memory=512 * 2**20,
             log_to_driver=False, _system_config={"metrics_report_interval_ms": 2000})  # Ray's default: 10 s
    return ray


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session (starting one costs ~5 s); fake GPUs for placement tests."""
    ray = _start_session_ray()
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    """The tests on the two-node cluster run last: that cluster replaces the session's for its module, so
    run anywhere else it would stop the session cluster and the engines the tests around it share."""
    items.sort(key=lambda item: "two_node_cluster" in getattr(item, "fixturenames", ()))  # stable: order kept


@pytest.fixture(scope="module")
def two_node_cluster():
    """Ray's multi-node test cluster (ray.cluster_utils.Cluster): two nodes of 4 fake GPUs each, one process
    tree per node on this machine. A Ray can connect to one cluster at a time, so the session cluster, if
    started, is stopped for the module and started again after it."""
    import ray
    from ray.cluster_utils import Cluster

    restart = ray.is_initialized()
    ray.shutdown()
    node = dict(num_cpus=1, num_gpus=4, object_store_memory=128 * 2**20)
    cluster = Cluster(initialize_head=True, head_node_args=node | dict(include_dashboard=False))
    cluster.add_node(**node)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if restart:
        _start_session_ray()


@pytest.fixture(scope="session")
def _engine_pair(ray_cluster, tiny_model):
    from rlvr.rollout.worker import RolloutWorker

    ray = ray_cluster
    # A small per-step token budget, so that batches of prompts exceed it (rlvr/rollout/vllm_cpu.py, point 3);
    # the gloo transfer backend, which an engine takes only when it is built, so every CPU transport works.
    handles = [RolloutWorker.remote(tiny_model, max_model_len=64, max_num_batched_tokens=64, prompt_template="{prompt}",
                                    engine_index=i, num_engines=2, weight_transfer="rlvr_gloo") for i in range(2)]
    ray.get([h.ready.remote() for h in handles], timeout=600)  # an engine that never starts fails the test
    return handles  # they end with the session's cluster (the two-node tests, last, may have replaced it)


@pytest.fixture
def engines(_engine_pair, tiny_model):
    """Two real vLLM engines on the tiny model (engines 0 and 1 of 2), shared by the session's tests: starting
    one costs ~12 s. Each test gets them serving the model's own weights (policy version 0), whatever the
    test before pushed into them."""
    import ray
    from safetensors.torch import load_file

    weights = load_file(f"{tiny_model}/model.safetensors")
    ray.get([h.load_weights.remote(weights, 0) for h in _engine_pair], timeout=120)
    return _engine_pair
