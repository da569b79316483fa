"""``recd dev up``: a local Kafka-protocol broker (and Redis when none answers) for a daemon run by hand.

Prints the variables to export, then waits; Ctrl-C or SIGTERM stops what it started.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

from daemon.dev.cluster import start_redis_cluster
from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.runtime.settings import Settings


def run_dev_up(settings: Settings, stop: threading.Event | None = None, primaries: int = 0) -> int:
    """Start the servers, print the variables to export, wait for a signal; ``primaries`` > 0: a local Redis
    Cluster of that many primaries, each with a replica."""
    stop = stop or _stop_on_signals()
    folder = Path(tempfile.mkdtemp(prefix="recd-dev-"))
    started: list[LocalProcess] = []
    try:
        broker = start_broker(folder)
        started.append(broker)
        redis_url, cluster = settings.redis_url, primaries > 0
        if cluster:
            local = start_redis_cluster(folder / "cluster", primaries=primaries, replicas=1)
            started += list(local.nodes.values())
            redis_url = local.url
        elif not redis_answers(redis_url):
            started.append(start_redis(folder))
            redis_url = started[-1].address
        print(f"export RECD_KAFKA_BOOTSTRAP={broker.address}")
        print(f"export RECD_REDIS_URL={redis_url}")
        print(f"export RECD_REDIS_CLUSTER={'true' if cluster else 'false'}")
        print(f"# logs in {folder}; Ctrl-C stops the broker{' and Redis' if len(started) > 1 else ''}", flush=True)
        while not stop.wait(0.5):
            dead = [p for p in started if not p.alive()]
            if dead:
                print(f"recd dev: a server exited; see {dead[0].log_path}", flush=True)
                return 1
        return 0
    finally:
        for proc in started:
            proc.stop()


def _stop_on_signals() -> threading.Event:
    """A flag set by SIGINT or SIGTERM (the handlers only set it)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop
