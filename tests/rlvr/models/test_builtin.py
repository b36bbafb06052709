import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.models.builtin import TINY, resolve_model
from rlvr.models.tiny import TinyShape, build_tokenizer


def test_tokenizer_is_character_level_and_round_trips(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)  # what vLLM loads too
    text = "12 + 7 - 30 = -11\nok"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert ids == build_tokenizer().encode(text, add_special_tokens=False)


def test_chat_template_and_special_tokens(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = tok.apply_chat_template([{"role": "user", "content": "1 + 2 ="}], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert tok.convert_ids_to_tokens([ids[0], ids[-2], ids[-1]]) == ["<|user|>", "<|end|>", "<|assistant|>"]
    assert tok.decode(ids[1:-2]) == "1 + 2 ="
    assert tok.eos_token == "<|end|>"


def test_model_loads_with_matching_vocab(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert model.config.vocab_size == len(tok)
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, len(tok))


def test_head_dim_below_32_is_rejected():
    with pytest.raises(ValueError, match="head_dim >= 32"):
        TinyShape(hidden=64, heads=4)


def test_resolve_builds_once_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    shape = TinyShape(hidden=64, layers=1, heads=2)
    path = resolve_model(TINY, shape)
    stamp = (tmp_path / path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(TINY, shape) == path
    assert (tmp_path / path / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.rsplit("/", 1)[1]]  # no temporary folder left


def test_unknown_builtin_and_plain_paths():
    with pytest.raises(ValueError, match="unknown builtin model"):
        resolve_model("builtin:nope")
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_a_resumable_build_keeps_its_partial_folder_until_it_succeeds(tmp_path):
    from rlvr.models.builtin import _atomic_build, _exclusive

    out = tmp_path / "model"

    def interrupted(folder):
        (folder / "progress").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _atomic_build(out, interrupted, resumable=True)
    found = []

    def finished(folder):
        found.append((folder.name, (folder / "progress").read_text()))
        (folder / "config.json").write_text("{}")

    _atomic_build(out, finished, resumable=True)
    assert found == [("model.partial", "half")] and (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.lock"]
    # While another process builds (holds the lock), a second builder starts afresh in its own folder.
    second = tmp_path / "second"
    with _exclusive(tmp_path / "second.lock") as held:
        assert held
        _atomic_build(second, lambda folder: found.append(folder.name) or (folder / "config.json").write_text("{}"),
                      resumable=True)
    assert found[-1].startswith("second.tmp-") and (second / "config.json").exists()
