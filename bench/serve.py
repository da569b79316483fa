"""Serving capacity: how many changed users per second one serve worker turns into lists.

    python bench/serve.py --users 20000 --items 5000 --events 200000 --repeats 3

Freshness (bench/freshness.py) is the queue's wait, and the wait is set by
this capacity: at R events/s spread over U users, a worker that serves C users/s
keeps about U * (1 - C/R) users queued. This bench measures C alone, without
a broker or a producer competing for the CPU: synthetic events and profiles go
straight into Redis through the ingest store, the default preset is trained
once and published, then every user is marked changed and ``Server.step`` runs
until the queue is empty. Last line: JSON with, per repeat, users_per_s, the
mean wall time of one step and the process's CPU time per user served (the
figure a busy machine does not move much: what a user costs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, python_loop_seconds
from daemon.dev.synthetic import SyntheticSpec, synthetic_events, synthetic_profiles
from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_server, build_trainer, build_watcher
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import each_shard
from daemon.serve.server import Server
from schemas.events import InteractionEvent, ProfileEvent


def fill(settings: Settings, topology: Topology, spec: SyntheticSpec, n: int) -> None:
    """Profiles and n events into Redis through the ingest store, in batches of 2,000."""
    store = RedisStore(topology, keys_of(settings), store_options(settings))
    store.apply_profiles(
        (ProfileEvent(p["user_id"], p["attributes"], p["ts"]), p["ts"]) for p in synthetic_profiles(spec, spec.start_ms)
    )
    for batch in _chunks(synthetic_events(spec, n), 2000):
        events = [
            (InteractionEvent(e["event_id"], e["user_id"], e["item_id"], e["type"], e["ts"], e.get("value")), e["ts"])
            for e in batch
        ]
        store.apply_events(events, int(time.time() * 1000))


def _chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def drain(server: Server) -> tuple[float, int, int, float]:
    """Mark every active user changed, step until none is queued: (seconds, users, steps, CPU seconds of this
    process: the serve loop and its writer thread)."""
    mark_all_changed(server)
    started, cpu, served, steps = time.perf_counter(), time.process_time(), 0, 0
    while True:
        while n := server.step():
            served += n
            steps += 1
        server.flush()
        if server.queue.depth() == 0:
            break
        server.queue.reset_pacing()  # shards found empty meanwhile were backed off
    return time.perf_counter() - started, served, steps, time.process_time() - cpu


def mark_all_changed(server: Server) -> None:
    """Every shard's active users into its changed-user queue, every shard asked at the next claim."""
    topology, keys, now = server.topology, server.keys, int(time.time() * 1000)
    active = each_shard(topology, keys, lambda p, s: p.zrange(keys.active(s), 0, -1))

    def mark(pipe: Any, shard: int) -> None:
        users = active[shard]
        if users:
            pipe.zadd(keys.dirty(shard), dict.fromkeys(users, now))
        else:
            pipe.zcard(keys.dirty(shard))

    each_shard(topology, keys, mark)
    server.queue.reset_pacing()


def parse_args() -> argparse.Namespace:
    """The command line: the synthetic world's size and the timed repeats."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    return ap.parse_args()


def report(
    args: argparse.Namespace,
    settings: Settings,
    model: str | None,
    runs: list[tuple[float, int, int, float]],
    loop_before: float,
) -> dict[str, Any]:
    """The last line's JSON: the run's sizes, the model served and each repeat's figures."""
    return {
        "users": args.users,
        "items": args.items,
        "events": args.events,
        "model": model,
        "batch": settings.serve_batch,
        "users_per_s": [round(n / s) for s, n, _, _ in runs],
        "ms_per_step": [round(1000 * s / max(1, k), 2) for s, _, k, _ in runs],
        "cpu_us_per_user": [round(1e6 * c / max(1, n), 1) for _, n, _, c in runs],
        "python_loop_s": [loop_before, python_loop_seconds()],
    }


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        redis_prefix=f"bench-serve-{tag}:", model_dir=f"var/bench-serve-{tag}/models", train_min_events=1
    )
    topology = topology_of(settings)
    spec = SyntheticSpec(users=args.users, items=args.items, seed=1, start_ms=int(time.time() * 1000) - 3_600_000)
    try:
        fill(settings, topology, spec, args.events)
        outcome = build_trainer(settings, Metrics(CollectorRegistry())).run_once()
        metrics = Metrics(CollectorRegistry())
        server = build_server(settings, metrics, build_watcher(settings, metrics))
        while server.watcher.current is None:
            server.step()
        server.step()  # the swap's refresh queue
        drain(server)  # warm caches
        runs = [drain(server) for _ in range(args.repeats)]
        server.shutdown()
    finally:
        drop_prefix(topology.client, settings.redis_prefix)
        shutil.rmtree(Path(settings.model_dir).parent, ignore_errors=True)
    print(json.dumps(report(args, settings, outcome.version, runs, loop_before)))


if __name__ == "__main__":
    main()
