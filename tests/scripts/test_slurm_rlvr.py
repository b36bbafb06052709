"""scripts/slurm_rlvr.sbatch: valid bash, and the commands it runs for a 2-node allocation (srun/scontrol stubbed)."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_rlvr.sbatch"

SRUN = """#!/usr/bin/env bash
echo "srun $*" >> "$STUB_LOG"
if [[ " $* " == *" hostname --ip-address "* ]]; then echo "10.0.0.$([[ $* == *node1* ]] && echo 1 || echo 2) fe80::1"; fi
"""
SCONTROL = """#!/usr/bin/env bash
[[ "$*" == "show hostnames node[1-2]" ]] && printf 'node1\\nnode2\\n'
"""


def test_bash_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_commands_for_two_nodes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "commands.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(log),
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_CPUS_ON_NODE": "16", "SLURM_GPUS_ON_NODE": "h100:8",
           "SLURM_SUBMIT_DIR": "/repo", "RLVR_PYTHON": "/venv/bin/python", "RAY_AUTH_TOKEN": "t",
           "RLVR_HEAD_WAIT": "0.5", "RLVR_WORKER_WAIT": "1"}  # background steps log first
    done = subprocess.run(["bash", str(SCRIPT), "examples/math_grpo.toml", "--output-dir", "/shared/run", "learner.gpus=1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 nodes, head node1 (10.0.0.1:6379), 16 CPUs and 8 GPUs per node" in done.stdout
    ray = "/venv/bin/python -m ray.scripts.scripts"
    expected = {
        "srun --nodes=1 --ntasks=1 -w node1 hostname --ip-address",
        f"srun --nodes=1 --ntasks=1 -w node1 {ray} start --head --node-ip-address=10.0.0.1 --port=6379 "
        "--dashboard-host=127.0.0.1 --dashboard-port=8265 --num-cpus=16 --num-gpus=8 --block",
        f"srun --nodes=1 --ntasks=1 -w node2 {ray} start --address=10.0.0.1:6379 --num-cpus=16 --num-gpus=8 --block",
        "srun --overlap --nodes=1 --ntasks=1 -w node1 env RAY_ADDRESS=10.0.0.1:6379 /venv/bin/python -m rlvr.cli "
        "train examples/math_grpo.toml --output-dir /shared/run learner.gpus=1",
    }
    lines = log.read_text().splitlines()
    assert set(lines) == expected and len(lines) == 4
    assert lines[0].endswith("hostname --ip-address") and lines[-1].startswith("srun --overlap")  # the driver last
