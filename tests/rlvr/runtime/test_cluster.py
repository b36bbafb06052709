"""A local cluster shares its machine: it takes none of Ray's fixed ports, prints the dashboard it took, and
its dashboard lets a browser in with the token the way the README says (rlvr/runtime/cluster.py)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.config import ClusterConfig
from rlvr.runtime.cluster import dashboard_port, describe_dashboard

REPO = Path(__file__).resolve().parents[3]
FIXED = (8265, 52365, 44227, 44217)  # dashboard, dashboard agent HTTP, dashboard and autoscaler metrics

# Runs in its own process: the test session's Ray (tests/conftest.py) is one cluster per process.
PROBE = r"""
import json, sys, urllib.error, urllib.request
import psutil, ray
from ray._raylet import AuthenticationTokenLoader
from ray.experimental import internal_kv
from rlvr.config import ClusterConfig, Config
from rlvr.runtime.cluster import ray_cluster

def call(url, headers, method="GET"):
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as e:
        return e.code, ""

lines = []
with ray_cluster(Config(cluster=ClusterConfig(num_cpus=1, object_store_mb=128)), say=lines.append):
    url = lines[0].split("dashboard at ")[1].split()[0].rstrip(";")
    token = AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True)  # what `ray get-auth-token` prints
    bare = call(url + "/api/version", {})
    login = call(url + "/api/authenticate", {"Authorization": "Bearer " + token}, "POST")  # what the page's dialog does
    with_cookie = call(url + "/api/version", {"Cookie": login[1].split(";")[0]})
    metrics = [internal_kv._internal_kv_get(k, namespace=None).decode()
               for k in (b"DashboardMetricsAddress", b"AutoscalerMetricsAddress")]
    listening = sorted({c.laddr.port for p in psutil.Process().children(recursive=True)
                        for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN})
    agent = next(n for n in ray.nodes() if n["Alive"])["DashboardAgentListenPort"]
    print(json.dumps(dict(line=lines[0], url=url, bare=bare[0], login=list(login), with_cookie=with_cookie[0],
                          metrics=metrics, listening=listening, agent=agent)))
"""


def hold(port: int) -> socket.socket | None:
    """Listen on 127.0.0.1:port, as another run's service would; None when someone already does."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
        return s
    except OSError:
        s.close()
        return None


@pytest.mark.ray
def test_a_local_cluster_takes_no_fixed_port_and_its_dashboard_takes_the_token(tmp_path):
    held = [s for s in map(hold, FIXED) if s is not None]  # the others are held by someone else already
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        for s in held:
            s.close()
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    port = int(seen["url"].rpartition(":")[2])
    assert port != 8265 and "(8265 was taken)" in seen["line"] and "ray get-auth-token" in seen["line"]
    assert f"ssh -L {port}:127.0.0.1:{port} HOST" in seen["line"]
    metrics_ports = [int(address.rpartition(":")[2]) for address in seen["metrics"]]
    assert seen["agent"] > 0 and set(metrics_ports) | {seen["agent"], port} <= set(seen["listening"]), seen
    assert not set(FIXED) & set(seen["listening"]), seen
    # The README's browser path: the page answers 401 until its dialog posts the token, which sets the cookie.
    assert seen["bare"] == 401
    assert seen["login"][0] == 200 and seen["login"][1].startswith("ray-authentication-token=")
    assert seen["with_cookie"] == 200


def test_dashboard_port_choice():
    assert dashboard_port(ClusterConfig()) is None  # Ray's search: 8265, else the next free port
    assert dashboard_port(ClusterConfig(dashboard_port=9000)) == 9000  # exactly this one
    assert dashboard_port(ClusterConfig(dashboard=False, dashboard_port=9000)) == 0  # headless: any free port


def test_the_dashboard_line_says_how_to_get_in(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert describe_dashboard("127.0.0.1:8265") == (
        "http://127.0.0.1:8265; it asks for the token `ray get-auth-token` prints; "
        "from another machine: ssh -L 8265:127.0.0.1:8265 HOST")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert describe_dashboard("127.0.0.1:8270") == "http://127.0.0.1:8270 (8265 was taken)"
    assert describe_dashboard("127.0.0.1:8270", asked=8270) == "http://127.0.0.1:8270"
