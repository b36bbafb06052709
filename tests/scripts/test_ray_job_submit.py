"""scripts/ray_job_submit.sh against a real local head (`ray start --head`): a 2-step tiny run as a Ray job, from a
copy of the checkout whose reward exists only there, and a run that fails."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head with token auth and its dashboard on loopback; stopped by killing its own process group."""
    gcs_port, dashboard_port = free_port(), free_port()
    # Its own temp dir: `ray start` records its address in TMP/ray/ray_current_cluster, which any later
    # address-less ray.init() on this machine would try to join (killing the head does not remove it).
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token", "RAY_TMPDIR": temp}
    log = (tmp_path_factory.mktemp("head") / "head.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={gcs_port}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         # the job agent's HTTP port defaults to 52365, which another cluster on the machine may hold
         f"--dashboard-agent-listen-port={free_port()}",
         "--include-dashboard=true", "--num-cpus=2", f"--object-store-memory={512 * 2**20}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(address + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # 401 without the token: it is up
            break
        except OSError:
            assert proc.poll() is None, Path(log.name).read_text()[-2000:]
            time.sleep(1)
    else:
        pytest.fail("the Ray head's dashboard did not come up in 120 s")
    yield address, env
    # `ray stop` would stop every Ray cluster of this user on the machine. The head's graceful stop takes
    # ~30 s here; its processes share one process group, so after a short grace they are killed together.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


# A reward module that exists only in the uploaded copy; its reward also checks that rlvr.kernels, and rlvr
# itself, come from that copy rather than from the checkout the interpreter has installed.
UPLOAD_ONLY_REWARD = """
from pathlib import Path

import rlvr
import rlvr.kernels

UPLOAD = Path(__file__).resolve().parents[1]


def from_upload(rollout) -> float:
    assert Path(rlvr.kernels.__file__).resolve().parents[1] == UPLOAD, rlvr.kernels.__file__
    assert Path(rlvr.__file__).resolve().parents[1] == UPLOAD, rlvr.__file__
    return 1.0
"""


def upload_copy(root: Path) -> Path:
    """This checkout without what its .gitignore leaves out of an upload, plus rewards/upload_only.py."""
    copy = root / "checkout"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "outputs", "build", "dist", ".cache", "__pycache__", ".pytest_cache", "*.egg-info"))
    (copy / "rewards/upload_only.py").write_text(UPLOAD_ONLY_REWARD)
    return copy


def test_two_step_tiny_run_succeeds_as_a_job_with_the_uploads_reward(head, tmp_path):
    address, env = head
    out = tmp_path / "run"
    copy = upload_copy(tmp_path)
    terms = '[{name="reasoning_gym"}, {name="rlvr.rewards.upload_only:from_upload", weight=0.1, label="upload"}]'
    done = subprocess.run(
        ["bash", str(copy / "scripts/ray_job_submit.sh"), "examples/tiny_arith_grpo.toml", "--output-dir", str(out),
         "--max-steps", "2", "sft.steps=20", "data.train_size=300", "eval.size=8", "data.batch_size=8",
         f"reward.terms={terms}"],
        env=env | {"RAY_ADDRESS": address, "RLVR_PYTHON": sys.executable}, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert done.stdout.strip().splitlines()[-1].endswith(": SUCCEEDED")
    assert "held-out greedy accuracy after RL" in done.stdout  # the job's log, followed
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (out / "summary.json").exists() and len(steps) == 2
    # every rollout scored by the upload's reward, none failed (a failed assertion there is an error, counted)
    assert [s["reward/upload/mean"] for s in steps] == [1.0, 1.0] and not any(s["reward/failed"] for s in steps)


def test_a_failing_run_exits_non_zero(head, tmp_path):
    address, env = head
    done = subprocess.run(
        ["bash", str(REPO / "scripts/ray_job_submit.sh"), "examples/tiny_arith_grpo.toml", "--output-dir",
         str(tmp_path), "algo.group_sise=4"],
        env=env | {"RAY_ADDRESS": address, "RLVR_PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and done.stdout.strip().splitlines()[-1].endswith(": FAILED")
