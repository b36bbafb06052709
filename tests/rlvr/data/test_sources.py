import json

import pytest

from rlvr.data.sources import DataError, PromptStream, chat_prompt_ids, load_file, load_splits, render_prompt
from rlvr.types import Sample

CHAIN = dict(task_kwargs=dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2))


def test_reasoning_gym_is_deterministic_and_held_out_is_unseen():
    a = load_splits("reasoning_gym:chain_sum", train_size=2000, eval_size=100, sft_size=500, **CHAIN)
    b = load_splits("reasoning_gym:chain_sum", train_size=2000, eval_size=100, sft_size=500, **CHAIN)
    assert a == b
    seen = {s.prompt for s in a.train} | {s.prompt for s in a.sft}
    assert len(a.held_out) == 100 and not seen & {s.prompt for s in a.held_out}
    sample = a.train[0]
    assert sample.metadata["source_dataset"] == "chain_sum" and sample.metadata["question"].endswith("=")


def test_dotted_prompt_key():
    splits = load_splits("reasoning_gym:chain_sum", prompt_key="metadata.expression", train_size=50, eval_size=5, **CHAIN)
    assert all(not s.prompt.endswith("=") and s.prompt[0].isdigit() for s in splits.train)


def test_unknown_task_and_bad_options():
    with pytest.raises(DataError, match="reasoning_gym:nope"):
        load_splits("reasoning_gym:nope")
    with pytest.raises(DataError, match="task_kwargs"):
        load_splits("reasoning_gym:chain_sum", task_kwargs={"no_such_option": 1}, train_size=10, eval_size=2)


def test_gsm8k_file(shared_data):
    path = shared_data("gsm8k/train.jsonl")
    samples = load_file(str(path), prompt_key="question", answer_key="answer", answer_format="gsm8k")
    assert len(samples) == 7473
    assert samples[0].answer == "72" and samples[0].prompt.startswith("Natalia sold clips")


def test_math_file_with_eval_source(shared_data):
    train, evalset = shared_data("math/train.jsonl"), shared_data("eval/math500.jsonl")
    splits = load_splits(str(train), prompt_key="problem", eval_source=str(evalset), eval_size=200)
    assert len(splits.train) == 14470 and len(splits.held_out) == 200
    assert "subject" in splits.held_out[0].metadata


def test_missing_file():
    with pytest.raises(DataError, match="data file not found: /no/such.jsonl"):
        load_splits("/no/such.jsonl")


def test_row_without_answer_key_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "1+1", "a": "2"}) + "\n\n" + json.dumps({"q": "2+2"}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:3: row has no answer key 'a' \(its keys: q\)"):
        load_file(str(path), prompt_key="q", answer_key="a")


def test_invalid_json_and_missing_marker(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "x", "a": "1"}\n{oops\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_file(str(path), prompt_key="q", answer_key="a")
    path.write_text('{"q": "x", "a": "no marker"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: answer has no '####'"):
        load_file(str(path), prompt_key="q", answer_key="a", answer_format="gsm8k")


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["1+1", "2+3"], "answer": ["2", "5"], "level": [1, 2]}), path)
    samples = load_file(str(path), prompt_key="problem", answer_key="answer")
    assert [(s.prompt, s.answer, s.metadata["level"]) for s in samples] == [("1+1", "2", 1), ("2+3", "5", 2)]
    with pytest.raises(DataError, match=r"d\.parquet row 1: row has no answer key 'solution'"):
        load_file(str(path), prompt_key="problem", answer_key="solution")


def test_prompt_stream_epochs_and_resume():
    samples = [Sample(id=str(i), prompt=str(i), answer="") for i in range(10)]
    stream = PromptStream(samples, batch_size=4, seed=3)
    first = [next(stream) for _ in range(5)]  # crosses an epoch: 2 batches per epoch
    assert all(len(b) == 4 for b in first) and len({s.id for s in first[0] + first[1]}) == 8
    resumed = PromptStream(samples, batch_size=4, seed=3)
    resumed.restore({"epoch": 1, "position": 4})
    stream.restore({"epoch": 1, "position": 4})
    assert next(resumed) == next(stream)
    with pytest.raises(DataError, match="exceeds"):
        PromptStream(samples, batch_size=11)


def test_prompt_template_is_literal_and_chat_ids(tiny_model):
    from transformers import AutoTokenizer

    sample = Sample(id="0", prompt="x^2", answer="")
    assert render_prompt(sample, r"{prompt} in \boxed{}") == r"x^2 in \boxed{}"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = chat_prompt_ids(tok, sample, "{prompt} =", system_prompt="S")
    assert tok.decode(ids) == "<|system|>S<|end|><|user|>x^2 =<|end|><|assistant|>"
