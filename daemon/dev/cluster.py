"""A real Redis Cluster on loopback ports, from ``redis-server``: for tests, benchmarks and ``recd dev up``.

``start_redis_cluster`` starts primaries (and replicas), joins them with ``redis-cli --cluster create``,
and returns once the cluster says ``cluster_state:ok`` *and* every replica has finished its first sync (a
primary killed before that is never failed over). The nodes use a 1 s node timeout and replica validity
factor 0, so a killed primary is replaced in about 1.5 s.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from daemon.dev.embedded import EmbeddedError, LocalProcess

BUS_OFFSET = 10_000  # a cluster node also listens on port + 10000 (the cluster bus)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` ports whose cluster-bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + BUS_OFFSET < 65536 and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass
class LocalCluster:
    """Cluster nodes we started and must stop; ``ports[:primaries]`` were created as primaries."""

    nodes: dict[int, LocalProcess]
    folder: Path
    primaries: int
    extra: list[str] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=5)

    def primary_ports(self) -> list[int]:
        """Ports of the nodes that are primaries now (after failovers too), from a live node's view."""
        for port, proc in self.nodes.items():
            if not proc.alive():
                continue
            try:
                raw: Any = self.client(port).cluster("NODES")
            except redis.RedisError:
                continue
            return sorted(
                int(address.split("@")[0].rsplit(":", 1)[1])
                for address, node in raw.items()
                if "master" in node["flags"] and "fail" not in node["flags"]
            )
        raise EmbeddedError("no cluster node answers")

    def kill(self, port: int) -> None:
        """SIGKILL one node (a failover test); ``restart`` brings it back."""
        self.nodes[port].proc.send_signal(signal.SIGKILL)
        self.nodes[port].proc.wait()

    def restart(self, port: int) -> None:
        self.nodes[port] = _start_node(port, self.folder, self.extra)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and every live replica's link to its primary is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._node_ready(port) for port, proc in self.nodes.items() if proc.alive()):
                return
            time.sleep(0.1)
        raise EmbeddedError(f"the Redis Cluster in {self.folder} did not become ready in {timeout_s:.0f}s")

    def _node_ready(self, port: int) -> bool:
        try:
            client = self.client(port)
            info: Any = client.cluster("INFO")
            replication = client.info("replication")
        except redis.RedisError:
            return False
        if info.get("cluster_state") != "ok":
            return False
        return replication.get("role") != "slave" or replication.get("master_link_status") == "up"

    def stop(self) -> None:
        for proc in self.nodes.values():
            proc.stop()


def _start_node(port: int, folder: Path, extra: list[str]) -> LocalProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedError("redis-server is not installed (Debian: `apt-get install redis-server`)")
    home = folder / str(port)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
    args += ["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
    args += ["--cluster-replica-validity-factor", "0", "--save", "", "--dir", str(home)]
    args += ["--logfile", str(log_path), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    node = LocalProcess(proc, f"redis://127.0.0.1:{port}/0", log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and node.alive():
        try:
            if redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping():
                return node
        except redis.RedisError:
            time.sleep(0.05)
    node.stop()
    raise EmbeddedError(f"redis-server on port {port} did not start; see {log_path}")


def start_redis_cluster(
    folder: Path | None = None, primaries: int = 3, replicas: int = 1, appendonly: bool = False
) -> LocalCluster:
    """Start ``primaries`` x (1 + ``replicas``) nodes, create the cluster, wait until it is ready."""
    folder = folder or Path(tempfile.mkdtemp(prefix="recd-cluster-"))
    extra = ["--appendonly", "yes" if appendonly else "no"]
    ports = free_cluster_ports(primaries * (1 + replicas))
    cluster = LocalCluster({}, folder, primaries, extra)
    try:
        for port in ports:
            cluster.nodes[port] = _start_node(port, folder, extra)
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise EmbeddedError(f"redis-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster
