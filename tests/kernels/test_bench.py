"""The benchmark CLI runs end to end on tiny shapes and prints one JSON object."""

import json

import torch

from rlvr.kernels import bench


def test_logprobs_prints_one_json_object(capsys):
    argv = ["logprobs", "--tokens", "33", "--hidden", "16", "--vocab", "37", "--temperature", "0.7"]
    assert bench.main([*argv, "--device", "cpu", "--repeats", "1", "--warmup", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["results"]) == {"naive", "ours"}
    for result in report["results"].values():
        assert result["time_s"] > 0 and result["cpu_s"] > 0 and result["peak_extra_mb"] >= 0, result
    assert report["ours_vs_naive"]["time"] > 0 and "memory_method" in report


def test_policy_loss_steps_run():
    """In-process (the child processes are the same code path as above)."""
    args = bench._parser().parse_args(["policy-loss", "--batch", "3", "--seq", "17", "--policy", "gspo"])
    for impl in ("torch", "triton"):
        result = bench._measure(bench._policy_loss_step(args, impl, torch.device("cpu")), torch.device("cpu"), 1, 0)
        assert len(result["times_s"]) == 1


def test_policy_loss_reports_the_interpreters_agreement_on_cpu(capsys):
    argv = ["policy-loss", "--batch", "4", "--seq", "37", "--mismatch", "mis_seq", "--policy", "gppo"]
    assert bench.main([*argv, "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "Triton interpreter" in report["device"] and "results" not in report  # no interpreter timings
    triton = report["agreement"]["vs_torch"]["triton"]
    assert triton["stats_keys_equal"] and report["agreement"]["grad_logprobs_max_abs"] > 0
    assert triton["loss_abs_diff"] < 1e-6 and triton["grad_logprobs_max_abs_diff"] < 1e-6
    assert triton["grad_entropy_max_abs_diff"] < 1e-6 and triton["stats_max_diff"] < 1e-5
