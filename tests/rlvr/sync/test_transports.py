"""Weight sync: every transport makes real vLLM engines serve the learner's new weights; stuck or failing
engines are errors that name them, within the deadline."""

import os
import time

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import ConfigError, LossConfig, load_config
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.rollout.worker import SamplingSpec
from rlvr.runtime.remote import CallTimeout
from rlvr.sync.build import sync_kind
from rlvr.sync.gloo_transfer import buckets
from rlvr.sync.shared_memory import SharedWeightsReader, SharedWeightsWriter
from rlvr.sync.transports import ObjectStoreSync, SharedMemorySync, TransferSync
from rlvr.types import Sample, ScoredRollout, TermResult

SAMPLES = [Sample(id=str(i), prompt=f"{i} + {i + 1} =", answer=str(2 * i + 1)) for i in range(4)]


# ---- the shared-memory file, in one process ----
def test_shared_file_round_trip_in_the_engines_dtype():
    weights = {"a": torch.randn(3, 5), "b.bias": torch.randn(7), "c": torch.randn(2, 2, 2)}
    writer = SharedWeightsWriter(weights.items(), torch.bfloat16, node_id="n")
    try:
        manifest = writer.write(weights.items())
        assert all(off % 64 == 0 for off in manifest.offsets) and manifest.dtype == "bfloat16"
        reader = SharedWeightsReader()
        got = dict(reader.tensors(manifest))
        assert all(torch.equal(got[k], v.to(torch.bfloat16)) for k, v in weights.items())
        # The learner rewrites in place; the engine's mapping sees it, also once the name is gone.
        writer.unlink()
        assert not os.path.exists(manifest.path)
        weights["b.bias"] += 1
        writer.write(weights.items())
        assert torch.equal(dict(reader.tensors(manifest))["b.bias"], weights["b.bias"].to(torch.bfloat16))
    finally:
        writer.unlink()


def test_shared_file_refuses_other_tensors():
    writer = SharedWeightsWriter([("a", torch.zeros(4))], torch.float32, node_id="n")
    try:
        with pytest.raises(ValueError, match="got a \\(5,\\), the file holds a \\(4,\\)"):
            writer.write([("a", torch.zeros(5))])
        with pytest.raises(ValueError, match="0 tensors written, the file holds 1"):
            writer.write([])
    finally:
        writer.unlink()


def test_gloo_buckets_split_by_size_and_dtype():
    f32, bf16 = torch.float32, torch.bfloat16
    # 16 bytes per [4] fp32 tensor, 24-byte buckets: one each; a dtype change always starts a bucket.
    assert buckets([f32, f32, f32, bf16], [[4], [2], [8], [1]], 24) == [[0, 1], [2], [3]]
    assert buckets([f32] * 3, [[1]] * 3, 2**20) == [[0, 1, 2]]


# ---- configuration, checked at load ----
@pytest.mark.parametrize("transport", ["object_store", "shared_memory", "gloo"])
def test_cpu_transports_with_gpu_engines_are_refused_at_load(transport):
    with pytest.raises(ConfigError, match=f'rollout.weight_sync = "{transport}" is a CPU transport; with GPU engines'):
        load_config(None, [f"rollout.weight_sync={transport}", "rollout.gpus_per_engine=1", "learner.gpus=1"])


def test_nccl_on_cpu_engines_and_a_zero_deadline_are_refused_at_load():
    with pytest.raises(ConfigError, match='"nccl" needs GPU engines'):
        load_config(None, ["rollout.weight_sync=nccl"])
    with pytest.raises(ConfigError, match="rollout.sync_timeout_s must be > 0"):
        load_config(None, ["rollout.sync_timeout_s=0"])


def test_auto_is_shared_memory_on_cpu_and_nccl_on_gpu():
    assert sync_kind(load_config(None, [])) == "shared_memory"
    assert sync_kind(load_config(None, ["rollout.gpus_per_engine=2", "learner.gpus=1"])) == "nccl"


# ---- real engines ----


@pytest.fixture(scope="module")
def learner(ray_cluster, tiny_model):
    handle = Learner.remote(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2)
    ray.get(handle.ready.remote())
    ray.get(handle.set_reference.remote())
    yield handle
    ray.kill(handle)


def train_once(learner, engine, seed: int) -> dict[str, torch.Tensor]:
    """One real optimizer step on the engine's own samples; returns the learner's new weights."""
    steps = [ray.get(r) for r in engine.generate.options(num_returns="streaming").remote(
        SAMPLES, SamplingSpec(n=2, max_tokens=6, seed=seed))]
    groups = [g for step in steps for g in step]
    scored = [[ScoredRollout(r, float(i % 2), {"t": TermResult(float(i % 2))}) for i, r in enumerate(g)] for g in groups]
    before = ray.get(learner.named_weights.remote())
    ray.get(learner.train_step.remote(make_train_batch(scored, [[1.0 if s.reward else -1.0 for s in g] for g in scored])))
    after = ray.get(learner.named_weights.remote())
    assert max((after[k] - before[k]).abs().max().item() for k in after) > 1e-3  # the update was real
    return after


def assert_engine_serves(engine, weights: dict[str, torch.Tensor], tiny_model: str, version: int) -> None:
    """The engine's greedy tokens and log-probs are those of the learner's weights in plain transformers."""
    greedy = ray.get(engine.generate_greedy.remote(SAMPLES, 6))
    assert all(r.policy_version == version for r in greedy)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model)
    hf.load_state_dict(weights, strict=False)  # tied lm_head: named_parameters lists the embedding once
    for r in greedy:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        out = hf.generate(torch.tensor([r.prompt_ids]), max_new_tokens=6, do_sample=False, eos_token_id=260,
                          pad_token_id=256)
        assert tuple(out[0, len(r.prompt_ids):].tolist()) == r.completion_ids
        with torch.no_grad():
            logp = hf(ids).logits[0, len(r.prompt_ids) - 1: -1].log_softmax(-1)
        hf_lp = logp.gather(-1, torch.tensor(r.completion_ids)[:, None])[:, 0]
        assert torch.allclose(hf_lp, torch.tensor(r.sampler_logprobs), atol=1e-4)


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("transport", ["shared_memory", "gloo", "object_store"])
def test_after_a_sync_both_engines_serve_the_learners_weights(transport, learner, engines, tiny_model):
    if transport == "shared_memory":
        sync = SharedMemorySync(learner, engines, timeout_s=60)
    elif transport == "gloo":
        # Engine i's worker joins at rank 1 + i: the rank offsets EngineGroupClient gives NCCL groups on GPU.
        sync = TransferSync(learner, engines, [1, 1], "rlvr_gloo", timeout_s=60)
    else:
        sync = ObjectStoreSync(learner, engines, timeout_s=60)
    for version in (1, 2):
        weights = train_once(learner, engines[version % 2], seed=version)
        assert sync.push(version) > 0
        for engine in engines:
            assert_engine_serves(engine, weights, tiny_model, version)


@pytest.mark.ray
@pytest.mark.vllm
def test_shared_memory_sync_leaves_no_file(learner, engines):
    before = set(os.listdir("/dev/shm"))
    sync = SharedMemorySync(learner, engines, timeout_s=60)
    sync.push(3)
    sync.push(4)
    assert not {f for f in os.listdir("/dev/shm") if f.startswith("rlvr-weights-")} - before


# ---- deadlines: stand-in engines that hang or fail ----
@ray.remote(num_cpus=0)
class StandInEngine:
    """Takes the sync calls of a RolloutWorker and sleeps or raises in them: an engine that hangs or breaks."""

    def __init__(self, behaviour: str, node: str = "") -> None:
        self.behaviour, self.node, self.loaded = behaviour, node, {}

    def node_id(self) -> str:
        return self.node or ray.get_runtime_context().get_node_id()

    def _act(self) -> float:
        if self.behaviour == "hang":
            time.sleep(30)
        if self.behaviour == "fail":
            raise RuntimeError("out of memory while loading")
        return 0.0

    def load_weights(self, weights, version: int) -> float:
        self.loaded = weights
        return self._act()

    def last_loaded(self) -> dict:
        return self.loaded

    def load_shared_weights(self, manifest, version: int) -> float:
        return self._act()

    def init_weight_transfer_engine(self, request) -> None:
        pass  # never joins the group: the trainer's rendezvous must time out

    def set_version(self, version: int) -> None:
        self._act()


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("kind", [SharedMemorySync, ObjectStoreSync])
def test_a_stuck_engine_is_an_error_naming_it_within_the_deadline(kind, learner, engines):
    stuck = StandInEngine.remote("hang")
    sync = kind(learner, [engines[0], stuck], timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(CallTimeout, match=f"engine 1 \\(actor {stuck._actor_id.hex()[:12]}\\): load_weights"
                       ".* within 2 s \\(rollout.sync_timeout_s\\)"):
        sync.push(5)
    assert time.perf_counter() - start < 10
    ray.kill(stuck)


@pytest.mark.ray
@pytest.mark.vllm
def test_a_failing_engine_is_an_error_naming_it(engines, tiny_model):
    learner = Learner.remote(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=1)  # a new file
    ray.get(learner.__ray_ready__.remote(), timeout=120)  # the deadline below times the push, not the model load
    broken = StandInEngine.remote("fail")
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(RuntimeError, match="(?s)engine 0 \\(actor .*\\): load_weights .* failed: .*out of memory"):
        SharedMemorySync(learner, [broken, engines[1]], timeout_s=10).push(6)
    assert not set(os.listdir("/dev/shm")) - before  # a failed first push leaves no file either
    ray.kill(broken)
    ray.kill(learner)


@pytest.mark.ray
@pytest.mark.vllm
def test_a_transfer_group_an_engine_never_joins_fails_in_time(ray_cluster, tiny_model):
    """The gloo rendezvous has the deadline too: a missing peer is an error on the learner, not a hang."""
    learner = Learner.remote(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=1)
    absent = StandInEngine.remote("ok")
    # The first `import vllm` in the learner takes ~10 s here: done first, so the deadline times the rendezvous.
    ray.get(learner.__ray_call__.remote(lambda self: __import__("vllm.distributed.weight_transfer.base")))
    start = time.perf_counter()
    with pytest.raises(ray.exceptions.RayTaskError, match="ranks 1..1\\) did not all join .* within 3 s"):
        TransferSync(learner, [absent], [1], "rlvr_gloo", timeout_s=3)
    assert time.perf_counter() - start < 30
    ray.kill(absent)
    ray.kill(learner)


@pytest.mark.ray
@pytest.mark.vllm
def test_engines_on_another_node_get_the_object_store(learner, engines, tiny_model):
    """Only the learner's node can map its file: an engine elsewhere is sent the tensors themselves."""
    elsewhere = StandInEngine.remote("ok", node="another-node")
    sync = SharedMemorySync(learner, [engines[0], elsewhere], timeout_s=60)
    weights = train_once(learner, engines[0], seed=11)
    sync.push(11)
    sent = ray.get(elsewhere.last_loaded.remote())
    assert sent.keys() == weights.keys() and all(torch.equal(sent[k], weights[k]) for k in weights)
    assert_engine_serves(engines[0], weights, tiny_model, 11)
    ray.kill(elsewhere)
