"""`rlvr verify` on a small JSONL: rewards and statuses per row, the summary, deadlines, in-process mode."""

import json

import pytest

from rlvr.scoring.verify import main

ROWS = [
    {"id": "a", "source": "x", "gold": "18", "response": "9 * 2 = 18\nA: 18", "label": True},
    {"id": "b", "source": "x", "gold": r"\frac{1}{2}", "response": r"so \boxed{0.5}", "label": True},
    {"id": "c", "source": "y", "gold": "4", "response": r"\boxed{5}", "label": False},
    {"id": "d", "source": "y", "gold": "5", "response": r"\boxed{9^{9^{9^{9}}}}", "label": False},  # sympy hangs
]


def write(tmp_path, rows):
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(path, *extra):
    return main([str(path), "--reward", "math", "--answer-key", "gold", "--response-key", "response", *extra])


def test_scores_rows_and_reports(tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    code = run(write(tmp_path, ROWS), "--output", str(out), "--timeout", "1", "--label-key", "label", "--by", "source")
    assert code == 0  # the hanging row is a timeout: a result, not a reward bug
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["reward"], r["status"]) for r in scored] == [(1.0, "ok"), (1.0, "ok"), (0.0, "ok"), (None, "timeout")]
    assert scored[0]["gold"] == "18" and "deadline" in scored[3]["error"]
    text = capsys.readouterr().out
    assert "rows: 4" in text and "rows/s" in text and "timeout: 1" in text and "mean reward: 0.6667" in text
    assert "agreement with 'label' [x]: 100.00% (2/2)" in text and "[y]: 100.00% (1/1)" in text


def test_in_process_mode(tmp_path, capsys):
    assert run(write(tmp_path, ROWS[:3]), "--workers", "0") == 0
    assert "ok: 3" in capsys.readouterr().out


def test_one_row_raising_exits_nonzero_saying_how_many(tmp_path, capsys):
    rows = [{"gold": str(i), "response": f"#### {i}"} for i in range(4)] + [{"gold": "no number", "response": "A: 1"}]
    path = write(tmp_path, rows)
    assert main([str(path), "--reward", "gsm8k", "--answer-key", "gold", "--response-key", "response"]) == 1
    said = capsys.readouterr()
    assert "mean reward: 1.0000  ok: 4  timeout: 0  error: 1  crash: 0" in said.out and "first error: row 4" in said.out
    assert said.err.strip() == "rlvr verify: the reward raised or crashed on 1 of 5 rows (error: 1, crash: 0; " \
                               "first messages above)"


def test_usage_errors(tmp_path, capsys):
    path = write(tmp_path, ROWS[:1])
    assert main([str(path), "--reward", "kimi_length", "--answer-key", "gold", "--response-key", "response"]) == 2
    with pytest.raises(SystemExit, match="has no key 'answer'"):
        main([str(path), "--reward", "math", "--answer-key", "answer", "--response-key", "response", "--workers", "0"])


@pytest.fixture
def plugins_importable(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))


def test_a_crash_exits_nonzero(tmp_path, capsys, plugins_importable):
    path = write(tmp_path, [{"gold": "1", "response": "fine"}, {"gold": "1", "response": "boom"}])
    assert main([str(path), "--reward", "reward_plugins:exits_on_boom", "--answer-key", "gold", "--response-key",
                 "response"]) == 1
    assert "on 1 of 2 rows (error: 0, crash: 1;" in capsys.readouterr().err


LONG = {"id": "long", "gold": "5", "response": "x" * 2500}


@pytest.mark.parametrize("workers", ["0", "1"])
def test_num_tokens_is_unknown_without_tokens_key(tmp_path, capsys, plugins_importable, workers):
    # the README's `num_tokens < 200` reward on a 2,500-character completion: no silent full marks
    path = write(tmp_path, [LONG])
    args = [str(path), "--reward", "reward_plugins:under_200_tokens", "--answer-key", "gold", "--response-key",
            "response", "--workers", workers]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "error: 1" in text
    assert "first error: row 0 (id 'long'): LookupError: num_tokens is unknown" in text and "--tokens-key" in text
    path = write(tmp_path, [LONG | {"tokens": 2500}])
    assert main(args + ["--tokens-key", "tokens"]) == 0
    assert "mean reward: 0.0000" in capsys.readouterr().out


def test_finish_reason_is_unknown_unless_the_rows_give_it(tmp_path, capsys, plugins_importable):
    path = write(tmp_path, [LONG, LONG | {"id": "cut", "finish_reason": "length"}])
    args = [str(path), "--reward", "truncation", "--answer-key", "gold", "--response-key", "response", "--workers", "0"]
    assert main(args) == 1  # the row without a finish reason is an error
    text = capsys.readouterr().out
    assert "ok: 1" in text and "error: 1" in text and "first error: row 0 (id 'long'): LookupError: finish_reason is unknown" in text


def test_a_reward_returning_text_is_an_error_naming_its_type(tmp_path, capsys, plugins_importable):
    path = write(tmp_path, ROWS[:1])
    assert main([str(path), "--reward", "reward_plugins:returns_text", "--answer-key", "gold", "--response-key",
                 "response"]) == 1
    assert "first error: row 0 (id 'a'): TypeError: reward returns_text returned str '1.0'" in capsys.readouterr().out


def test_missing_input_is_one_line(tmp_path, capsys):
    assert run(tmp_path / "nowhere.jsonl") == 2
    assert capsys.readouterr().err == f"rlvr verify: input file not found: {tmp_path / 'nowhere.jsonl'}\n"
