import json
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.config import load_config, to_dict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_dry_run_validates_every_example_and_starts_nothing(path, capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(path), "--output-dir", str(out), "--dry-run", "--max-steps", "3", "algo.epochs=2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == to_dict(load_config(path, ["train.steps=3", "algo.epochs=2"]))
    assert not out.exists()


def test_config_error_is_one_line_naming_key_and_file(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[algo]\ngroup_sise = 4\n")
    assert main(["train", str(bad), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr: config error:") and "algo.group_sise" in err and "bad.toml" in err


def test_missing_data_file_fails_before_anything_starts(capsys, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    code = main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path / "run"), f"data.source={missing}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rlvr: data error:") and str(missing) in err


def test_stray_arguments_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "examples/tiny_arith_grpo.toml", "--output-dir", str(tmp_path), "--bogus"])
