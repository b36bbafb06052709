"""scripts/ray_nodes.sh: a node's address on an interface, and the wait on `ray status` against a real cluster."""

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def helper(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts/ray_nodes.sh"), *args], capture_output=True, text=True,
                          env=os.environ | {"RLVR_PYTHON": sys.executable}, timeout=timeout)


def test_node_address_on_an_interface():
    assert helper("node_address", "lo").stdout == "127.0.0.1\n"
    missing = helper("node_address", "nosuch0")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no IPv4 address on interface 'nosuch0' (RLVR_IFACE); it has: " in missing.stderr
    assert "lo 127.0.0.1" in missing.stderr.split("it has: ")[1]  # in the machine's order
    assert len(missing.stderr.strip().splitlines()) == 1


def test_node_address_without_an_interface_is_the_default_routes():
    done = helper("node_address")
    if done.returncode:  # a machine without a default route: the error asks for an interface
        assert "no default route" in done.stderr and "set RLVR_IFACE" in done.stderr
        return
    address = done.stdout.strip()
    assert not ipaddress.ip_address(address).is_loopback
    assert address in {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}


@pytest.mark.ray
def test_wait_for_nodes_polls_ray_status_until_a_deadline(ray_cluster):
    """The session cluster: one node with 4 (fake) GPUs."""
    gcs = ray_cluster.get_runtime_context().gcs_address
    there = helper("wait_for_nodes", gcs, "1", "4", "120", timeout=150)
    assert there.returncode == 0, there.stderr
    assert f"Ray at {gcs} has 1 nodes and 4 GPUs" in there.stdout

    start = time.monotonic()
    missing = helper("wait_for_nodes", gcs, "2", "8", "4", timeout=60)
    assert missing.returncode == 1 and time.monotonic() - start < 14  # the deadline, plus starting bash
    # (on a busy machine no `ray status` may answer within the 4 s: then it counts none)
    counts = "has [01] of 2 nodes and [04] of 8 GPUs"
    assert re.search(f"after 4 s the Ray cluster at {re.escape(gcs)} {counts}", missing.stderr)
