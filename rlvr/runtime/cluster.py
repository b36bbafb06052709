"""The Ray cluster of a run: connect to one, or start a local one closed to the network that shares the machine.

A local cluster takes no fixed port, so two runs (or a run and a test session) can share a machine: the
dashboard takes 8265 or the next free port after it (Ray's own search) and the run prints the one it took;
Ray's dashboard agent, the dashboard's and the autoscaler's metrics servers, which Ray puts on fixed
ports (52365, 44227, 44217) that a second cluster then fails to bind, get free ones.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import ray

from rlvr.config import ClusterConfig, Config

# Ray's fixed metrics-server ports, read from these variables by the processes ray.init starts
# (ray/dashboard/consts.py, ray/autoscaler/_private/constants.py).
_METRICS_PORT_VARIABLES = ("DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT")


@contextlib.contextmanager
def ray_cluster(cfg: Config, say: Callable[[str], None] = print) -> Iterator[dict]:
    """Connect to `cluster.address` (or $RAY_ADDRESS), or start a local cluster, and shut it down afterwards.

    A local cluster runs with Ray's token authentication on (Ray 2.60 writes ~/.ray/auth_token on first
    start): it cannot bind all of its services to loopback (GCS, raylet and worker gRPC servers listen on
    every interface), so the token is what keeps others from running code on it. The dashboard and the
    Prometheus endpoint are bound to 127.0.0.1 as far as Ray allows. A given cluster (an address, or the
    RAY_ADDRESS a `ray job submit` driver inherits, where passing num_cpus to ray.init would raise) keeps
    its own settings. Inside an existing Ray session (a test's, or a notebook's) that session is used and
    left running.
    """
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    c = cfg.cluster
    address = c.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # inherited by every Ray process of the cluster
        # `import ray` read RAY_AUTH_MODE already; without a re-read the driver would not present the token
        # its own new cluster asks for (ray._private.authentication_test_utils does the same).
        from ray._raylet import AuthenticationTokenLoader
        from ray._raylet import Config as RayConfig

        RayConfig.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        with _free_fixed_ports():
            context = ray.init(
                address="local",  # a new cluster, even where `ray start` left /tmp/ray/ray_current_cluster behind
                num_cpus=c.num_cpus or os.cpu_count(),
                num_gpus=c.fake_gpus or None,
                object_store_memory=c.object_store_mb * 2**20,
                include_dashboard=c.dashboard,
                dashboard_host=c.dashboard_host,
                dashboard_port=dashboard_port(c),
                _node_ip_address="127.0.0.1",
                _metrics_export_port=c.metrics_export_port or None,
                log_to_driver=True,
            )
        say(f"Ray: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}, metrics at http://127.0.0.1:{metrics_port()}/metrics"
            + (", dashboard at " + describe_dashboard(context.dashboard_url, c.dashboard_port) if c.dashboard else ""))
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def dashboard_port(c: ClusterConfig) -> int | None:
    """ray.init's dashboard_port: None makes Ray take 8265 or the next free port (up to 50 further); without
    the dashboard, Ray still starts its HTTP server (headless), so 0 keeps it off 8265."""
    if not c.dashboard:
        return 0
    return c.dashboard_port or None


def describe_dashboard(url: str, asked: int = 0) -> str:
    """The dashboard's address, and how a browser gets past token authentication (the page asks for it)."""
    host, _, port = url.rpartition(":")
    text = f"http://{url}" + (" (8265 was taken)" if not asked and port != "8265" else "")  # asked: a port given
    if os.environ.get("RAY_AUTH_MODE") == "token":
        text += f"; it asks for the token `ray get-auth-token` prints; from another machine: ssh -L {port}:{host}:{port} HOST"
    return text


@contextlib.contextmanager
def _free_fixed_ports() -> Iterator[None]:
    """While ray.init starts the cluster: free ports for the services Ray puts on fixed ones.

    Ray's dashboard agent serves HTTP on 52365 whatever ray.init is given (only `ray start` has
    --dashboard-agent-listen-port; ray.init builds its RayParams without it): a second cluster on the
    machine fails to bind it, retries for ~3 s and runs with its agent's HTTP service (job submission,
    profiling) off. Port 0, as `--dashboard-agent-listen-port=0` would give, lets the agent bind any
    free port (Ray records the one taken). The two metrics servers take their ports from the environment.
    """
    from ray._private import parameter

    ray_params = parameter.RayParams

    class AnyAgentPort(ray_params):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", 0)
            super().__init__(*args, **kwargs)

    saved = {name: os.environ.get(name) for name in _METRICS_PORT_VARIABLES}
    for name in _METRICS_PORT_VARIABLES:
        os.environ.setdefault(name, str(_free_port()))  # a user's own choice stands
    parameter.RayParams = AnyAgentPort
    try:
        yield
    finally:
        parameter.RayParams = ray_params
        for name, value in saved.items():  # the started processes keep theirs; a later cluster picks anew
            if value is None:
                os.environ.pop(name, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_port() -> int:
    """The Prometheus port of this node's metrics agent (cluster.metrics_export_port, or Ray's choice)."""
    node = next(n for n in ray.nodes() if n["NodeID"] == ray.get_runtime_context().get_node_id())
    return int(node["MetricsExportPort"])
