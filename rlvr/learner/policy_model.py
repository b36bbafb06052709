"""The learner's policy model: load it (optionally with LoRA adapters), and hand its weights out.

LoRA (Hu et al. 2022, eq. 3): a frozen weight W0 [out, in] gains a trainable low-rank update,
    h = W0 x + (alpha / r) * B A x,    A [r, in] (random init), B [out, r] (zero init),
so the adapted model starts equal to the base model. LoRA during RL is Tina's recipe (Wang et al. 2025):
only A and B train and are saved, while the engines, which know nothing of adapters, receive the merged
weight W0 + (alpha / r) * B A under the base model's Hugging Face names. An adapted LM head (`lm_head`
among the target modules) runs through the logits path, since the fused head reads only the base weight;
a head tied to the embeddings is refused (its adapter cannot be merged into the shared weight).

Mixed precision: with `dtype = bfloat16` the model's parameters are bf16 (the compute copies; the fp32
master weights live in the optimizer, `rlvr/learner/optim.py`), so every matmul, the fused LM head included,
runs in bf16 with fp32 accumulation. The fused-head check runs before the cast, in fp32: bf16 logits
differ from hidden @ head.T by rounding (~4e-3 relative), which is not what the check looks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr.config import LoraConfig
from rlvr.runtime.checkpoint import save_hf_atomic

# PEFT nests the Hugging Face model as `base_model.model.<hf name>` and moves a wrapped layer's own
# parameters to `<layer>.base_layer.<param>`; undoing both gives the names vLLM's `load_weights` expects.
_PEFT_PREFIX = "base_model.model."
_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")


@dataclass(frozen=True)
class Policy:
    model: torch.nn.Module  # a transformers causal LM, or a peft PeftModel around one
    fused_head: bool  # whether log-probs may use the fused LM head (fused_head_matches, below)


def load_policy(model_path: str, lora: LoraConfig, device: torch.device | str,
                dtype: torch.dtype = torch.float32) -> Policy:
    """Load a causal LM in fp32, check its head, add LoRA adapters when `lora.rank > 0`, cast to `dtype`.

    Dropout is off everywhere (pi_old and pi must be one function of the weights), LoRA's own included.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    model = without_dropout(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device))
    fused_head = fused_head_matches(model, device)
    if lora.rank > 0:
        model = _with_lora(model, lora)
        if _adapts_head(model, lora):
            # The fused head multiplies by the head's base weight and would skip its adapter.
            fused_head = False
    return Policy(model.to(dtype), fused_head)


def _adapts_head(model: torch.nn.Module, lora: LoraConfig) -> bool:
    """Whether LoRA wraps the LM head. A tied head is refused: its adapter cannot be merged into the one
    weight it shares with the embeddings, so the engines would sample without it."""
    from peft.tuners.lora import LoraLayer

    lm = hf_model(model)
    if not isinstance(lm.get_output_embeddings(), LoraLayer):
        return False
    if lm.config.get_text_config().tie_word_embeddings:
        raise ValueError(f"learner.lora.target_modules = {list(lora.target_modules)} "
                         "adapts the LM head, which this model ties to its input embeddings: the adapter could "
                         "not be merged for the engines; leave the head out")
    return True


def fused_head_matches(model: torch.nn.Module, device: torch.device, tol: float = 1e-4) -> bool:
    """Whether hidden_state @ lm_head.weight^T reproduces `model(...).logits` on a few tokens.

    Heads that scale or soft-cap their logits (Cohere's logit_scale, MiniCPM's width scaling, Falcon-H1's
    multipliers, Gemma's soft-capping, possibly under `text_config`) are not a plain linear map; no list
    of config names catches them all, so the check is the output itself. A bias is a mismatch too.
    """
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        return False
    ids = torch.arange(1, 9, device=device)[None] % model.config.get_text_config().vocab_size
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        fused = out.hidden_states[-1].float() @ head.weight.float().T
        logits = out.logits.float()
    scale = logits.abs().max().clamp(min=1.0)
    return bool(((fused - logits).abs().max() / scale) <= tol)


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every dropout probability: log-probs for the ratio must be deterministic, as the sampler's are.

    Not `eval()`: activation checkpointing and some models' train-mode paths need `training` on.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for owner in (module, getattr(module, "config", None)):
            # Attention modules copy e.g. config.attention_dropout into a float attribute at build time.
            for key, value in list(vars(owner).items()) if owner is not None else ():
                if "dropout" in key and isinstance(value, float) and value > 0:
                    setattr(owner, key, 0.0)
    return model


def _with_lora(model: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    import peft

    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.target_modules),
                             lora_dropout=lora.dropout, bias="none", task_type="CAUSAL_LM")
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:  # PEFT names no key; the config key is what the user can change
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"learner.lora.target_modules = {list(lora.target_modules)}: {e} "
                         f"(this model's linear layers: {names})") from None


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside a PeftModel (adapters still injected), or the model itself."""
    return model.get_base_model() if is_lora(model) else model


def trunk_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder trunk (returns last hidden states) and the LM head, for a plain or a LoRA model.

    A PeftModel's own `base_model` is PEFT's LoraModel (which returns logits), not the trunk.
    """
    lm = hf_model(model)
    return lm.base_model, lm.get_output_embeddings()


@torch.no_grad()
def named_weights(model: torch.nn.Module, dtype: torch.dtype, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Full weights under the base model's Hugging Face names (tied weights once), as fresh `dtype`
    tensors on `device`: what the engines load. LoRA layers give W0 + scale * B A, computed beside the
    model (the trained model is not merged and unmerged, so its weights never take a rounding step)."""
    if not is_lora(model):
        return {name: p.detach().to(device, dtype=dtype, copy=True) for name, p in model.named_parameters()}
    deltas = _lora_deltas(model)
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        name = _hf_name(name)
        weight = p.detach().to(device, dtype=torch.float32, copy=True)
        if name in deltas:
            weight += deltas[name].to(device)
        out[name] = weight.to(dtype)
    return out


def _lora_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{hf name of a wrapped weight: its fp32 scale * B A} over the active adapters."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        total = None
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            # fp32 (B A): a bf16 product would round the update before it meets W0
            a = module.lora_A[adapter].weight.float()
            b = module.lora_B[adapter].weight.float()
            delta = (b @ a) * module.scaling[adapter]
            if getattr(module, "fan_in_fan_out", False):
                delta = delta.T
            total = delta if total is None else total + delta
        if total is not None:
            deltas[_hf_name(f"{name}.base_layer.weight")] = total
    return deltas


def _hf_name(peft_name: str) -> str:
    return _BASE_LAYER.sub("", peft_name.removeprefix(_PEFT_PREFIX))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates (all of them, or only the adapters), by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path) -> Path:
    """A LoRA model's adapter in PEFT's format (adapter_config.json, adapter_model.safetensors) and the
    tokenizer, written atomically: all a checkpoint needs besides the run's starting model."""
    if not is_lora(model):
        raise ValueError("save_adapter needs a LoRA model (learner.lora.rank > 0)")
    return save_hf_atomic(model, tokenizer, out_dir)


def load_adapter(model: torch.nn.Module, folder: str | Path) -> None:
    """Put the adapter weights `save_adapter` wrote back into this LoRA model (same base, same config)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(Path(folder) / "adapter_model.safetensors")))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder}: adapter does not fit this model: missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}")


def export_hf(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path, dtype: torch.dtype) -> Path:
    """A plain Hugging Face folder in `dtype` (config, safetensors, tokenizer), LoRA merged in.

    The transformers model saves a state dict under its own names: the merged weights (one tensor for
    tied ones, which `save_pretrained` then writes once) and its other entries, adapter keys dropped.
    """
    lm = hf_model(model)
    weights = named_weights(model, dtype)
    hf_name_of = {id(p): _hf_name(name) for name, p in model.named_parameters()}
    state = {}
    for key, value in lm.state_dict(keep_vars=True).items():
        if "lora_" in key:
            continue
        name = hf_name_of.get(id(value))
        state[_hf_name(key)] = weights[name] if name is not None else value.detach().to("cpu", dtype=dtype)
    return save_hf_atomic(lm, tokenizer, out_dir, state_dict=state)
