"""The tiny character-level Qwen2 of the demo and the tests: a byte-level tokenizer and a random model,
saved with `save_pretrained` so vLLM and transformers load them like any checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
