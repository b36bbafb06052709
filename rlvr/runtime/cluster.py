"""The Ray cluster of a run: connect to one, or start a local one closed to the network."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import ray

from rlvr.config import Config


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
        ray.init(
            address="local",  # a new cluster, even where `ray start` left /tmp/ray/ray_current_cluster behind
            num_cpus=c.num_cpus or os.cpu_count(),
            num_gpus=c.fake_gpus or None,
            object_store_memory=c.object_store_mb * 2**20,
            include_dashboard=c.dashboard,
            dashboard_host=c.dashboard_host,
            dashboard_port=c.dashboard_port,
            _node_ip_address="127.0.0.1",
            _metrics_export_port=c.metrics_export_port or None,
            log_to_driver=True,
        )
        say(f"Ray: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}, metrics at "
              f"http://127.0.0.1:{metrics_port()}/metrics" + (f", dashboard at http://{c.dashboard_host}:"
                                                              f"{c.dashboard_port}" if c.dashboard else ""))
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def metrics_port() -> int:
    """The Prometheus port of this node's metrics agent (cluster.metrics_export_port, or Ray's choice)."""
    node = next(n for n in ray.nodes() if n["NodeID"] == ray.get_runtime_context().get_node_id())
    return int(node["MetricsExportPort"])
