"""Trackers: Prometheus names, Ray gauges at the node's endpoint, W&B offline, TensorBoard."""

import time
import urllib.request

import pytest

from rlvr.observe.trackers import RayMetrics, WandB, build_trackers, prometheus_name


@pytest.mark.parametrize("key, name", [
    ("reward/mean", "rlvr_reward_mean"),
    ("timing/step_s", "rlvr_timing_step_s"),
    ("reward/math/timeouts", "rlvr_reward_math_timeouts"),
    ("eval/pass@4", "rlvr_eval_pass_4"),
    ("eval/accuracy@25%tokens", "rlvr_eval_accuracy_25_tokens"),
    ("kl", "rlvr_kl"),
    ("reward/my.reward/mean", "rlvr_reward_my_reward_mean"),
])
def test_prometheus_name(key, name):
    assert prometheus_name(key) == name


@pytest.mark.ray
def test_ray_gauges_reach_the_prometheus_endpoint(ray_cluster):
    from rlvr.runtime.cluster import metrics_port

    RayMetrics().log(7, {"reward/mean": 0.375, "timing/step_s": 1.25, "note": "text", "bad": float("nan")})
    url, found = f"http://127.0.0.1:{metrics_port()}/metrics", {}
    deadline = time.monotonic() + 60  # the agent exports every 2 s here (tests/conftest.py), 10 s by default
    while time.monotonic() < deadline and len(found) < 3:
        for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
            for name in ("rlvr_reward_mean", "rlvr_timing_step_s", "rlvr_step"):
                if line.startswith((name + "{", "ray_" + name + "{")):
                    found[name] = float(line.rsplit(" ", 1)[1])
        time.sleep(1)
    assert found == {"rlvr_reward_mean": 0.375, "rlvr_timing_step_s": 1.25, "rlvr_step": 7.0}


def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = WandB(tmp_path, {"algo": {"group_size": 8}})
    tracker.log(0, {"reward/mean": 0.25, "note": "text"})
    tracker.log(1, {"reward/mean": 0.5})
    assert tracker.run.summary["reward/mean"] == 0.5 and "note" not in tracker.run.summary.keys()
    tracker.close()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")  # `wandb sync` uploads it later
    assert list(run.glob("run-*.wandb"))


def test_build_trackers_by_name(tmp_path):
    trackers = build_trackers(("tensorboard",), tmp_path, {})
    trackers[0].log(0, {"reward/mean": 1.0})
    trackers[0].close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(KeyError):
        build_trackers(("mlflow",), tmp_path, {})
