"""The learner-side forward pass over a TrainBatch, shared by the policy, the reference, the critic and a
distillation teacher.

Each prompt runs once; every completion of it then runs on the prompt's cached keys and values (gradients
flow through the cache into the prompt's computation, as in a full forward). `completion_states` returns,
for every completion token, the state that predicts it: the last hidden state (the fused LM head, the
critic's value head) or the logits (heads that are not a plain linear map).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from rlvr.algorithms.batch import PAD, TrainBatch
from rlvr.kernels import linear_logprobs, logits_logprobs
from rlvr.learner.policy_model import trunk_and_head


def completion_states(run: torch.nn.Module, batch: TrainBatch, device: torch.device, hidden: bool,
                      replayable: bool = False) -> torch.Tensor:
    """[B, Lc, H] last hidden states (`hidden`, `run` a base model) or [B, Lc, V] logits (`run` a causal LM);
    position t is the state after completion token t - 1, which predicts token t.

    `replayable`: the layers are activation-checkpointed (`checkpoint_layers`), so the backward replays each
    layer's forward, cache writes included; the prompt and completion passes then use caches whose replay
    writes nothing new (`_PromptCache`, `_PrefixView`)."""
    prompts = batch.prompts_P_Lp.to(device)
    completions = batch.completions_B_Lc.to(device)
    index = batch.prompt_index_B.to(device)
    prompt_mask, mask = prompts != PAD, completions != PAD
    prompt_len = prompt_mask.sum(1)
    # Completion token t predicts token t + 1. One-token completions still run the completion pass (on that
    # token, its output cut off below): under ZeRO-3 every module call gathers its parameters across the
    # ranks, so each rank's micro-batches must call the same modules as often, whatever their lengths.
    width = max(completions.shape[1] - 1, 1)
    inputs = completions[:, :width].clamp(min=0)
    positions = prompt_len[index, None] + torch.arange(inputs.shape[1], device=device)
    attention = torch.cat([prompt_mask[index], mask[:, :width]], 1).long()
    pick = (lambda out: out.last_hidden_state) if hidden else (lambda out: out.logits)
    first = run(input_ids=prompts.clamp(min=0), attention_mask=prompt_mask.long(),
                position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), use_cache=True,
                past_key_values=_PromptCache() if replayable else None)
    states = pick(first)[index, -1:]  # left-padded: the last column is each prompt's last token
    if inputs.shape[1]:
        cache = first.past_key_values
        cache = _PrefixView(cache, index) if replayable else cache
        if not replayable:
            cache.batch_select_indices(index)
        rest = run(input_ids=inputs, attention_mask=attention, position_ids=positions, past_key_values=cache)
        states = torch.cat([states, pick(rest)], 1)[:, : completions.shape[1]]
    return states


def token_logprobs(model: torch.nn.Module, batch: TrainBatch, *, temperature: float, fused_head: bool,
                   compute_dtype: torch.dtype, device: torch.device,
                   checkpointed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every completion token, [B, Lc] fp32 (0 at padding). `checkpointed`: the
    model's layers were wrapped by `checkpoint_layers`."""
    mask = (batch.completions_B_Lc != PAD).to(device)
    targets = batch.completions_B_Lc.to(device)[mask]
    autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
    with autocast:
        if fused_head:
            trunk, head = trunk_and_head(model)  # a LoRA model's `base_model` is PEFT's wrapper
            states = completion_states(trunk, batch, device, hidden=True, replayable=checkpointed)
            hidden_N = states[mask]
            logprobs_N, entropy_N = linear_logprobs(hidden_N, head.weight.to(hidden_N.dtype), targets, temperature)
        else:
            states = completion_states(model, batch, device, hidden=False, replayable=checkpointed)
            logprobs_N, entropy_N = logits_logprobs(states[mask], targets, temperature)
    logprobs = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    entropy = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    logprobs[mask] = logprobs_N.float()
    entropy[mask] = entropy_N.float()
    return logprobs, entropy


def checkpoint_layers(model: torch.nn.Module) -> int:
    """Activation checkpointing that keeps the shared-prompt path: each decoder layer's activations are
    recomputed in the backward instead of stored. Returns the number of layers wrapped.

    transformers' own gradient checkpointing sets `past_key_values=None` in train mode, so completions
    would silently lose their prompt; here each layer's forward runs under a non-reentrant
    `torch.utils.checkpoint` and the caches of `completion_states(replayable=True)` make the replayed
    cache writes harmless.
    """
    wrapped = 0
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer) and not getattr(layer, "_rlvr_checkpointed", False):
            layer.forward = _checkpointed(layer.forward)
            layer._rlvr_checkpointed = True
            wrapped += 1
    if not wrapped:
        raise ValueError(f"{type(model).__name__}: no decoder layers (transformers GradientCheckpointingLayer) "
                         "to checkpoint; set learner.activation_checkpointing = false")
    return wrapped


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # log-probs without a backward: nothing to save
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


class _PromptCache(DynamicCache):
    """The prompt pass's cache: a layer's write replaces its (empty) entry instead of appending, so the
    backward's replay of that layer rewrites the same keys and values."""

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        while len(self.layers) <= layer_idx:
            self.layers.append(DynamicLayer())
        layer = self.layers[layer_idx]
        if not layer.is_initialized:
            layer.lazy_initialization(key_states, value_states)
        if layer.is_sliding:
            raise ValueError("activation checkpointing does not support sliding-window cache layers")
        layer.keys, layer.values = key_states, value_states
        return key_states, value_states


class _PrefixView(DynamicCache):
    """The completion pass's cache: the prompt's keys and values gathered per completion (`index`); a
    layer's read returns prompt + new states and stores nothing, so a replay sees the same prompt."""

    def __init__(self, prompt: DynamicCache, index: torch.Tensor) -> None:
        super().__init__()
        for source in prompt.layers:
            layer = DynamicLayer()
            layer.lazy_initialization(source.keys, source.values)
            layer.keys, layer.values = source.keys[index], source.values[index]
            self.layers.append(layer)

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)
