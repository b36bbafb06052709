"""`rlvr plot`: PNGs from run folders, runs overlaid, the eval panel only when a run has eval metrics."""

import json

import pytest
from PIL import Image

from rlvr.cli import main
from rlvr.observe.plot import correctness_key, smooth


def fake_run(folder, steps: int, with_eval: bool, correctness: str = "reasoning_gym"):
    folder.mkdir()
    (folder / "run_config.json").write_text(json.dumps({"reward": {"terms": [{"name": correctness, "label": ""}],
                                                                    "correctness": ""}}))
    with (folder / "metrics.jsonl").open("w") as f:
        for step in range(steps):
            record = {"step": step, "reward/mean": step / steps, f"reward/{correctness}/mean": step / steps,
                      "response_length/mean": 5.0, "kl": 0.01 * step, "entropy": 1.0, "timing/step_s": 2.0}
            if with_eval and step % 5 == 4:
                record |= {"eval/pass@1": 0.2, "eval/pass@4": 0.5, "eval/avg@4": 0.2}
            f.write(json.dumps(record) + "\n")
    return folder


def test_plots_two_runs_overlaid(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 20, with_eval=True)
    b = fake_run(tmp_path / "b", 12, with_eval=False, correctness="math")
    assert main(["plot", str(a), str(b), "--output", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out.split()
    expected = ["reward", "correctness", "response_length", "kl", "entropy", "step_time", "eval"]
    assert [p.rsplit("/", 1)[1] for p in printed] == [f"{name}.png" for name in expected]
    for path in printed:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (600, 360)


def test_no_eval_panel_without_eval_metrics_and_default_folder(tmp_path, capsys):
    run = fake_run(tmp_path / "run", 3, with_eval=False)
    assert main(["plot", str(run)]) == 0
    assert not (run / "plots" / "eval.png").exists() and (run / "plots" / "reward.png").exists()


def test_a_folder_without_metrics_is_an_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_correctness_key_follows_the_config(tmp_path):
    assert correctness_key(fake_run(tmp_path / "r", 1, False, correctness="mypkg.rewards:exact")) == "reward/exact/mean"


def test_smooth_is_a_trailing_mean():
    assert smooth([0.0, 2.0, 4.0, 6.0], 2) == pytest.approx([0.0, 1.0, 3.0, 5.0])
