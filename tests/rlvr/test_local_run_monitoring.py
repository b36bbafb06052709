"""A local `rlvr train` run as an operator sees it: Prometheus gauges that match metrics.jsonl, the dashboard
on loopback only, and Ray's token authentication on in every process of the run (rlvr/runtime/cluster.py,
rlvr/observe/trackers.py). The run is its own process with its own cluster, as a user starts it."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
SAMPLE_RE = re.compile(r"^(?:ray_)?([a-zA-Z_][\w:]*)(?:\{[^}]*\})? (\S+)$")
OPERATOR_METRICS = {  # metrics.jsonl key -> gauge name
    "reward/mean": "rlvr_reward_mean", "timing/step_s": "rlvr_timing_step_s",
    "reward/reasoning_gym/mean": "rlvr_reward_reasoning_gym_mean",
    "response_length/mean": "rlvr_response_length_mean", "timing/generate_s": "rlvr_timing_generate_s",
    "timing/reward_s": "rlvr_timing_reward_s", "timing/train_s": "rlvr_timing_train_s",
    "timing/sync_s": "rlvr_timing_sync_s", "throughput/tokens_per_s": "rlvr_throughput_tokens_per_s",
    "staleness/max": "rlvr_staleness_max", "reward/reasoning_gym/timeouts": "rlvr_reward_reasoning_gym_timeouts",
    "reward/reasoning_gym/errors": "rlvr_reward_reasoning_gym_errors",
    "reward/reasoning_gym/crashes": "rlvr_reward_reasoning_gym_crashes",
    "memory/learner_rss_gb": "rlvr_memory_learner_rss_gb",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError:
        return {}
    return {m[1]: float(m[2]) for m in map(SAMPLE_RE.match, body.splitlines()) if m}


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("monitored")
    metrics_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}  # a user's shell
    # Ray exports metrics every 10 s by default; every 1 s, 6 steps (~1 s each) see several exports while RL runs.
    env["RAY_metrics_report_interval_ms"] = "1000"
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "examples/tiny_arith_grpo.toml", "--output-dir", str(out),
           "--max-steps", str(STEPS), "sft.steps=0", "data.train_size=300", "eval.size=8", "data.batch_size=8",
           f"cluster.metrics_export_port={metrics_port}", f"cluster.dashboard_port={dashboard_port}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    scrapes, trees, deadline = [], [], time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1.0)
        if (sample := scrape(metrics_port)):
            scrapes.append(sample)
        if len(trees) < 3 and sum(bool(s) for s in scrapes) >= 2 * len(trees) + 1:  # while RL steps run
            trees.append(snapshot(proc.pid))
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return dict(records=records, scrapes=scrapes, trees=trees, dashboard_port=dashboard_port, output=output)


def auth_mode(p: psutil.Process) -> str | None:
    """RAY_AUTH_MODE in the process's environment. A process that retitled itself (`ray::DashboardAgent`,
    `ray-dashboard-*`, via setproctitle) overwrote its /proc environ block (it reads empty); it inherited
    the environment of its parent, so the nearest ancestor with a readable block answers for it."""
    while p is not None:
        env = p.environ()
        if env:
            return env.get("RAY_AUTH_MODE")
        p = p.parent()
    return None


def snapshot(pid: int) -> dict:
    """Each process of the run: its name, RAY_AUTH_MODE and the TCP addresses it listens on."""
    processes = []
    for p in process_tree(pid):
        try:
            listening = [c.laddr for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            processes.append({"name": p.name(), "auth": auth_mode(p), "listening": listening})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {"processes": processes}


def test_gauges_match_metrics_jsonl(monitored_run):
    records, scrapes = monitored_run["records"], monitored_run["scrapes"]
    assert [r["step"] for r in records] == list(range(STEPS))
    seen = {name for sample in scrapes for name in sample}
    missing = sorted(set(OPERATOR_METRICS.values()) - seen)
    assert not missing, f"not exported: {missing}"
    for key, name in OPERATOR_METRICS.items():
        logged = [r[key] for r in records]
        for sample in scrapes:
            if name in sample:  # a gauge holds one step's value, whichever step was last logged
                assert any(sample[name] == pytest.approx(v, rel=1e-6, abs=1e-9) for v in logged), (name, sample[name])
    # the step gauge says which record a scrape saw: all gauges of one scrape come from that record
    last = [s for s in scrapes if "rlvr_step" in s][-1]
    assert last["rlvr_reward_mean"] == pytest.approx(records[int(last["rlvr_step"])]["reward/mean"])


def test_token_auth_is_on_and_the_dashboard_is_on_loopback(monitored_run):
    trees = monitored_run["trees"]
    assert trees, "no snapshot of the run's processes was taken while it trained"
    for tree in trees:
        names = {p["name"] for p in tree["processes"]}
        assert {"gcs_server", "raylet"} <= names, names
        # The driver (first) set RAY_AUTH_MODE after it started, which /proc/PID/environ does not show; its
        # line "RAY_AUTH_MODE=token" is checked below. Every process Ray started inherited it.
        ray_processes = tree["processes"][1:]
        assert all(p["auth"] == "token" for p in ray_processes), [(p["name"], p["auth"]) for p in ray_processes]
        dashboard = [a for p in tree["processes"] for a in p["listening"] if a.port == monitored_run["dashboard_port"]]
        assert dashboard and all(a.ip == "127.0.0.1" for a in dashboard), dashboard
        # what listens beyond loopback does so in a process that demands the token
        wide = [p for p in ray_processes if any(a.ip not in ("127.0.0.1", "::1") for a in p["listening"])]
        assert wide and all(p["auth"] == "token" for p in wide)
    assert "RAY_AUTH_MODE=token" in monitored_run["output"]


def test_dashboard_defaults():
    from rlvr.config import load_config

    c = load_config(None).cluster
    assert (c.dashboard, c.dashboard_host, c.dashboard_port) == (True, "127.0.0.1", 0)  # 0: 8265 or the next free
