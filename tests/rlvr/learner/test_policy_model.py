"""The learner's model: LoRA adapters (merged weights for the engines, adapter-only training, exports) and
bf16 compute weights with fp32 masters."""

import copy
import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import ConfigError, LoraConfig, LossConfig, load_config
from rlvr.learner.actor import Learner
from rlvr.learner.forward import token_logprobs
from rlvr.learner.optim import OptimSpec, TorchUpdater
from rlvr.learner.policy_model import export_hf, load_policy, named_weights, save_adapter, trunk_and_head

CPU = torch.device("cpu")
LORA = LoraConfig(rank=4, alpha=8.0)


def batch():
    groups = groups_of(PROMPTS, COMPLETIONS)
    return make_train_batch(groups, [[1.0 if j % 2 else -1.0 for j in range(len(g))] for g in groups])


def logprobs(policy, data, dtype=torch.float32, fused=None):
    fused = policy.fused_head if fused is None else fused
    return token_logprobs(policy.model, data, temperature=1.0, fused_head=fused, compute_dtype=dtype, device=CPU)[0]


def trained_lora(tiny_model):
    """A LoRA policy whose adapters are not zero (B starts at 0: the merge would be trivial)."""
    torch.manual_seed(0)
    policy = load_policy(tiny_model, LORA, CPU)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy


def test_lora_trains_only_the_adapters(tiny_model):
    policy = load_policy(tiny_model, LORA, CPU)
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    updater = TorchUpdater(policy.model, OptimSpec(lr=1e-2))
    data = batch()
    start = logprobs(policy, data)
    for _ in range(3):
        lp = logprobs(policy, data)
        updater.backward(-(data.advantages_B_Lc * lp).sum() / data.completion_mask_B_Lc.sum())
        updater.step()
    for name, p in policy.model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == ("lora_" in name), name  # every adapter moved, nothing else did
    assert not torch.allclose(logprobs(policy, data), start)


def test_merged_weights_equal_peft_merge_and_unload_without_touching_the_model(tiny_model):
    policy = trained_lora(tiny_model)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    got = named_weights(policy.model, torch.float32)
    expected = dict(copy.deepcopy(policy.model).merge_and_unload().named_parameters())
    plain = dict(AutoModelForCausalLM.from_pretrained(tiny_model).named_parameters())
    assert set(got) == set(expected) == set(plain)  # the base model's HF names, tied weights once
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-6)
    assert any(not torch.allclose(got[n], plain[n]) for n in got if "q_proj.weight" in n)  # the update is in
    assert all(torch.equal(p, before[n]) for n, p in policy.model.named_parameters())
    assert named_weights(policy.model, torch.bfloat16)["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_fused_head_of_a_lora_model_equals_its_logits_path(tiny_model):
    policy = trained_lora(tiny_model)
    trunk, head = trunk_and_head(policy.model)
    assert type(trunk).__name__ == "Qwen2Model" and head is policy.model.get_output_embeddings()
    data = batch()
    fused, full = logprobs(policy, data, fused=True), logprobs(policy, data, fused=False)
    torch.testing.assert_close(fused, full, atol=2e-5, rtol=0)
    base = load_policy(tiny_model, LoraConfig(), CPU)
    assert (fused - logprobs(base, data)).abs().max() > 1e-3  # the adapters are in the fused path


def test_an_adapted_lm_head_trains_through_the_logits_path(tiny_model, tmp_path):
    """The fused head multiplies by the head's base weight, so a head adapter needs the logits path; a head
    tied to the embeddings is refused (the merged weights could not carry its adapter)."""
    head_lora = LoraConfig(rank=4, alpha=8.0, target_modules=("q_proj", "lm_head"))
    with pytest.raises(ValueError, match=r"learner.lora.target_modules = \['q_proj', 'lm_head'\].*ties"):
        load_policy(tiny_model, head_lora, CPU)
    untied = AutoModelForCausalLM.from_pretrained(tiny_model)
    untied.config.tie_word_embeddings = False
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    untied.save_pretrained(tmp_path / "untied")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "untied")
    torch.manual_seed(0)
    policy = load_policy(str(tmp_path / "untied"), head_lora, CPU)
    assert not policy.fused_head
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lm_head" in name and "lora_B" in name:
                p.normal_(0, 0.5)
    data = batch()
    got, full = logprobs(policy, data), logprobs(policy, data, fused=False)
    torch.testing.assert_close(got, full, atol=2e-5, rtol=0)
    assert (logprobs(policy, data, fused=True) - full).abs().max() > 1e-2  # what the fused head would miss
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "untied")
    merged.load_state_dict(named_weights(policy.model, torch.float32))
    ids = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, policy.model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_export_is_a_plain_hf_folder_and_the_adapter_reloads(tiny_model, tmp_path):
    from peft import PeftModel

    policy = trained_lora(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    export_hf(policy.model, tokenizer, tmp_path / "export", torch.float32)
    keys = load_file(tmp_path / "export" / "model.safetensors")
    assert not [k for k in keys if "lora" in k or "base_layer" in k]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert type(reloaded).__name__ == "Qwen2ForCausalLM"
    ids = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, policy.model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)

    save_adapter(policy.model, tokenizer, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {f.name for f in (tmp_path / "adapter").iterdir()}
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # only the adapter is saved
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-6, rtol=0)


def test_unknown_target_modules_name_the_key(tiny_model):
    with pytest.raises(ValueError, match=r"learner.lora.target_modules = \['qkv'\].*q_proj"):
        load_policy(tiny_model, LoraConfig(rank=4, target_modules=("qkv",)), CPU)


@pytest.mark.parametrize("override, key", [
    ("learner.lora.rank=-1", "learner.lora.rank"),
    ("learner.lora.alpha=0", "learner.lora.alpha"),
    ("learner.lora.dropout=0.1", "learner.lora.dropout"),
    ("learner.lora.target_modules=[]", "learner.lora.target_modules"),
])
def test_bad_lora_config_fails_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("examples/tiny_arith_lora.toml", ["learner.lora.rank=8", override])


def test_bf16_weights_keep_fp32_masters_that_accumulate_small_updates(tiny_model):
    policy = load_policy(tiny_model, LoraConfig(), CPU, torch.bfloat16)
    assert policy.fused_head  # checked in fp32, before the cast: bf16 rounding is no head mismatch
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    lr, steps = 1e-5, 4
    updater = TorchUpdater(policy.model, OptimSpec(lr=lr))
    assert {m.dtype for m in updater.masters} == {torch.float32}
    initial = [m.detach().clone() for m in updater.masters]
    data = batch()
    for _ in range(steps):
        # two micro-batches per step: their gradients add up in fp32
        for prompts in (torch.tensor([0]), torch.tensor([1, 2])):
            sub = data.select_prompts(prompts)
            lp = logprobs(policy, sub, torch.bfloat16)
            updater.backward(-(sub.advantages_B_Lc * lp).sum() / data.completion_mask_B_Lc.sum())
        updater.step()
    assert all(p.grad is None for p in policy.model.parameters())
    moved = torch.cat([(m - m0).abs().flatten() for m, m0 in zip(updater.masters, initial)])
    # Adam moves a weight by about lr per step; in bf16 alone (ulp ~1e-4 at |w| ~0.02) most such steps round away
    assert moved.median() > steps * lr / 2
    for p, m in zip(policy.model.parameters(), updater.masters):
        assert torch.equal(p, m.to(torch.bfloat16))  # the compute copy is the rounded master


def test_bf16_update_follows_the_fp32_update(tiny_model):
    data = batch()
    deltas = {}
    for dtype in (torch.float32, torch.bfloat16):
        policy = load_policy(tiny_model, LoraConfig(), CPU, dtype)
        updater = TorchUpdater(policy.model, OptimSpec(lr=1e-3))
        lp = logprobs(policy, data, dtype)
        updater.backward(-(data.advantages_B_Lc * lp).sum() / data.completion_mask_B_Lc.sum())
        initial = [m.detach().clone() for m in updater.masters]
        updater.step()
        deltas[dtype] = torch.cat([(m - m0).flatten() for m, m0 in zip(updater.masters, initial)])
    # Adam's first step is lr * sign(grad) where the gradient is not ~0: bf16 gradients agree on the sign
    agree = (deltas[torch.float32].sign() == deltas[torch.bfloat16].sign()).float().mean()
    assert agree > 0.95


def _with_reference(data, learner, dtype, model_path):
    """The batch with pi_ref's log-probs from the reference actor's class (rlvr/learner/teacher.py), in this
    process, loaded with the learner's weights as RL starts (what `estimate.Reference.prepare` does)."""
    from rlvr.learner.teacher import Teacher

    reference = Teacher.__ray_actor_class__(model_path, dtype=dtype, threads=2)
    reference.load_weights(learner.named_weights())
    return dataclasses.replace(data, ref_logprobs_B_Lc=reference.logprobs(data))


def test_learner_with_lora_syncs_and_saves_merged_weights(tiny_model, tmp_path):
    learner = Learner.__ray_actor_class__(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2,
                                          lora=LORA)
    data = _with_reference(batch(), learner, "float32", tiny_model)  # pi_ref: the merged weights before RL
    learner.train_step(data)
    assert learner.train_step(data)["kl"] > 0
    weights = learner.named_weights()
    plain = dict(AutoModelForCausalLM.from_pretrained(tiny_model).named_parameters())
    assert set(weights) == set(plain)
    changed = [n for n in weights if not torch.equal(weights[n], plain[n])]
    assert changed and all(n.endswith("_proj.weight") for n in changed)  # only where the adapters are
    learner.save(str(tmp_path / "final"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert all(torch.equal(p, weights[n]) for n, p in saved.named_parameters())


def test_bf16_learner_trains_syncs_and_saves_bf16_weights(tiny_model, tmp_path):
    learner = Learner.__ray_actor_class__(tiny_model, optim=OptimSpec(lr=1e-2), loss=LossConfig(), threads=2,
                                          dtype="bfloat16")
    data = _with_reference(batch(), learner, "bfloat16", tiny_model)
    before = learner.named_weights()
    metrics = learner.train_step(data)
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0 and metrics["kl"] == 0.0  # pi == pi_ref, both bf16
    weights = learner.named_weights()
    assert all(w.dtype == torch.bfloat16 for w in weights.values())
    assert any(not torch.equal(weights[n], before[n]) for n in weights)
    learner.save(str(tmp_path / "final"))
    saved = load_file(tmp_path / "final" / "model.safetensors")
    assert all(saved[n].dtype == torch.bfloat16 and torch.equal(saved[n], weights[n]) for n in weights)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.vllm
def test_lora_grpo_raises_the_sampled_reward(ray_cluster, tmp_path):
    """The LoRA preset (adapters on the SFT'd tiny teacher) for 22 RL steps of 32 prompts x 8 samples.

    Measured (2 cores): first 10 steps 0.646, last 10 0.753 (a 40-step run of the same: last 10 0.729)."""
    import json

    from rlvr.train import train

    cfg = load_config("examples/tiny_arith_lora.toml", ["train.steps=22", "data.batch_size=32", "eval.size=16", "cluster.dashboard=false"])
    train(cfg, tmp_path)
    rewards = [json.loads(line)["reward/mean"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    print(f"LoRA GRPO mean sampled reward: first 10 steps {first:.3f}, last 10 {last:.3f}")
    assert last - first >= 0.05, rewards
    keys = load_file(tmp_path / "model.safetensors")  # the final export: plain HF names, adapters merged
    assert keys and not [k for k in keys if "lora" in k or "base_layer" in k]


def test_bf16_checkpoint_model_holds_the_fp32_masters(tiny_model, tmp_path):
    """`model/` of a resumable checkpoint is what `rlvr eval` reads: the trained fp32 masters, not the bf16
    compute copy upcast (which drops the updates smaller than a bf16 ulp)."""
    learner = Learner.__ray_actor_class__(tiny_model, optim=OptimSpec(lr=1e-4), loss=LossConfig(), threads=2,
                                          dtype="bfloat16")
    learner.train_step(batch())
    learner.save_state(str(tmp_path / "state"))
    saved = load_file(tmp_path / "state" / "model" / "model.safetensors")
    updater = learner.updater.updater
    masters = {n: m for (n, _), m in zip(learner.model.named_parameters(), updater.masters)}
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert all(torch.equal(saved[n], masters[n]) for n in masters)
    assert any(not torch.equal(masters[n], masters[n].to(torch.bfloat16).float()) for n in masters)  # bits bf16 lacks
