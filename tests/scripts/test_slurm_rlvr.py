"""scripts/slurm_rlvr.sbatch on a 2-node allocation with srun, scontrol, `ray status` and the driver stubbed:
the commands it runs, what reaches every node, and the scheduler's signals (checkpoint, requeue)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_rlvr.sbatch"

SRUN = """#!/usr/bin/env bash
echo "srun $*" >> "$STUB_LOG"
echo "$NCCL_SOCKET_IFNAME $GLOO_SOCKET_IFNAME $RAY_AUTH_TOKEN" >> "$STUB_ENV"
"""
SCONTROL = """#!/usr/bin/env bash
case "$1 $2" in
    "show hostnames") [[ $3 == "node[1-2]" ]] && printf 'node1\\nnode2\\n' ;;
    "requeue "*) echo "scontrol $*" >> "$STUB_LOG" ;;
esac
"""
# RLVR_PYTHON: `ray status` prints two nodes of 8 GPUs; the driver logs its command line and either exits
# or runs until SIGTERM, then exits 143 as `rlvr train` does after its checkpoint; anything else is Python.
PYTHON = f"""#!/usr/bin/env bash
case "$1 $2 $3" in
    "-m ray.scripts.scripts status")
        echo "status $4 $5" >> "$STUB_LOG"
        printf '%s\\n' "======== Autoscaler status ========" "Node status" "------" "Active:" " 1 node_a1" \\
            "Idle:" " 1 node_b2" "Pending:" " (no pending nodes)" "" "Resources" "------" "Total Usage:" \\
            " 0.0/32.0 CPU" " 0.0/16.0 GPU" ;;
    "-m rlvr.cli train")
        echo "driver RAY_ADDRESS=$RAY_ADDRESS $*" >> "$STUB_LOG"
        echo "$NCCL_SOCKET_IFNAME $GLOO_SOCKET_IFNAME $RAY_AUTH_TOKEN" >> "$STUB_ENV"
        if [[ $STUB_DRIVER == run ]]; then
            trap 'echo "driver got TERM" >> "$STUB_LOG"; exit 143' TERM
            while :; do sleep 0.1; done
        fi ;;
    *) exec {sys.executable} "$@" ;;
esac
"""


@pytest.fixture
def stubs(tmp_path):
    """The environment of a batch script on node1 of node[1-2]; `read()` gives (commands, env lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL), ("python", PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log, env_log = tmp_path / "commands.log", tmp_path / "env.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(log), "STUB_ENV": str(env_log),
           "STUB_DRIVER": "exit", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[1-2]", "SLURMD_NODENAME": "node1",
           "SLURM_CPUS_ON_NODE": "16", "SLURM_GPUS_ON_NODE": "h100:8", "SLURM_SUBMIT_DIR": str(REPO),
           "RLVR_PYTHON": str(bin_dir / "python"), "RLVR_IFACE": "lo"}

    def read():
        return log.read_text().splitlines(), env_log.read_text().splitlines()

    return env, read


ARGS = ["examples/math_grpo.toml", "--output-dir", "/shared/run", "learner.gpus=1"]


def test_bash_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    done = subprocess.run(["shellcheck", "-x", str(SCRIPT), str(REPO / "scripts/ray_nodes.sh"),
                           str(REPO / "scripts/ray_job_submit.sh")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_commands_for_two_nodes(stubs, tmp_path):
    env, read = stubs
    done = subprocess.run(["bash", str(SCRIPT), *ARGS], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 nodes, head node1 (127.0.0.1:6379 on lo), 16 CPUs and 8 GPUs per node" in done.stdout
    ray = f"{env['RLVR_PYTHON']} -m ray.scripts.scripts"
    commands, env_lines = read()
    head, status, worker, driver = (
        (f"srun --nodes=1 --ntasks=1 -w node1 {ray} start --head --node-ip-address=127.0.0.1 --port=6379 "
         "--dashboard-host=127.0.0.1 --dashboard-port=8265 --num-cpus=16 --num-gpus=8 --block"),
        "status --address 127.0.0.1:6379",
        (f"srun --nodes=1 --ntasks=1 -w node2 bash {REPO}/scripts/ray_nodes.sh ray_start_here "
         "--address=127.0.0.1:6379 --num-cpus=16 --num-gpus=8"),
        f"driver RAY_ADDRESS=127.0.0.1:6379 -m rlvr.cli train --resume=auto {' '.join(ARGS)}",
    )
    assert sorted(commands) == sorted([head, status, worker, status, driver])
    # srun steps run in the background (a step may log after the next command); the waits are in order
    polls = [i for i, command in enumerate(commands) if command == status]
    assert polls[0] < commands.index(worker) and polls[1] < commands.index(driver)
    # Every node and the driver get the interface for NCCL and gloo, and one token made for this job.
    assert len(set(env_lines)) == 1 and len(env_lines) == 3
    nccl, gloo, token = env_lines[0].split()
    assert nccl == gloo == "lo" and re.fullmatch("[0-9a-f]{64}", token)
    saved = tmp_path / ".ray/auth_token"  # where the dashboard's user reads it (ray start writes none)
    assert saved.read_text() == token + "\n" and saved.stat().st_mode & 0o077 == 0


def test_the_token_in_home_is_passed_on(stubs, tmp_path):
    env, read = stubs
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray/auth_token").write_text("tok123")
    done = subprocess.run(["bash", str(SCRIPT), *ARGS], env=env | {"NCCL_SOCKET_IFNAME": "ib0"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(read()[1]) == {"ib0 lo tok123"}  # a NCCL_SOCKET_IFNAME of one's own is kept


@pytest.mark.parametrize("sig, requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_a_scheduler_signal_stops_the_driver_with_a_checkpoint(stubs, sig, requeued):
    """USR1 (the time limit is near) and TERM (scancel, preemption) reach the driver as SIGTERM; after USR1
    the job requeues itself, and its next start resumes (--resume=auto)."""
    env, read = stubs
    proc = subprocess.Popen(["bash", str(SCRIPT), *ARGS], env=env | {"STUB_DRIVER": "run"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, deadline = Path(env["STUB_LOG"]), time.monotonic() + 60
        while not (log.exists() and "driver" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the driver did not start"
            time.sleep(0.2)
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed test leaves no batch script (and its endless stub driver) behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, out
    commands = read()[0]
    assert "driver got TERM" in commands
    assert ("scontrol requeue 42" in commands) is requeued, out


@pytest.mark.parametrize("args, env_change, message", [
    (["examples/math_grpo.toml"], {}, "give --output-dir DIR"),
    (ARGS, {"SLURM_SUBMIT_DIR": "/tmp"}, "'/tmp' is not an rlvr checkout"),
])
def test_mistakes_fail_before_anything_starts(stubs, args, env_change, message):
    env, _ = stubs
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env | env_change, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert not Path(env["STUB_LOG"]).exists()  # no srun, no driver
