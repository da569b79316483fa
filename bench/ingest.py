"""Ingest benchmark: produce N synthetic events, ingest them, verify Redis, report.

    python bench/ingest.py --events 1000000

Uses RECD_KAFKA_BOOTSTRAP / RECD_REDIS_URL when set, else starts the embedded
broker (and a local redis-server if none answers). The last line printed is
one JSON object: events_per_s, lost, duplicated, dlq, redis_bytes_per_user, ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, process_cpu_seconds, python_loop_seconds
from bench.groundtruth import replay
from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.dev.publish import make_producer
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_ingest, create_topics
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import store_options
from daemon.runtime.profiles import finest_segment
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader
from schemas.events import InteractionEvent


def produce(settings: Settings, spec: SyntheticSpec, n: int) -> float:
    """Publish profiles and n events (streamed: the ingest run must not share a huge heap with them)."""
    producer = make_producer(settings)
    started = time.perf_counter()
    for p in synthetic_profiles(spec, spec.start_ms - 1000):
        producer.send(settings.profiles_topic, key=str(p["user_id"]).encode(), value=encode(p))
    for ev in synthetic_events(spec, n):
        producer.send(settings.events_topic, key=str(ev["user_id"]).encode(), value=encode(ev))
    producer.flush()
    producer.close()
    return n / (time.perf_counter() - started)


def ingest(settings: Settings, total: int, client: redis.Redis) -> tuple[float, Metrics]:
    """Run the ingest role until Redis has handled every event; returns (seconds, metrics)."""
    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    started = None
    names = ("recd_events_applied_total", "recd_events_duplicate_total", "recd_events_stale_total")
    try:
        while sum(metrics.registry.get_sample_value(n) or 0 for n in names) < total:
            polled = worker.step()
            if started is None and polled:
                started = time.perf_counter()
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        worker.shutdown()
    return elapsed, metrics


def verify(
    settings: Settings, client: redis.Redis, events: list[dict[str, object]], profiles: dict[str, str]
) -> dict[str, object]:
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold, profiles)
    keys = Keys(settings.redis_prefix)
    users = sorted(expected.histories)
    got: dict[str, set[tuple[int, int, str]]] = {}
    reader = StateReader(client, keys)
    for start in range(0, len(users), 5000):
        chunk = reader.histories_by_item_id(users[start : start + 5000])
        got.update({u: {(e.ts, e.crc, i) for i, e in h} for u, h in chunk.items()})
    missing = sum(len(set(h) - got.get(u, set())) for u, h in expected.histories.items())
    extra = sum(len(got.get(u, set()) - set(h)) for u, h in expected.histories.items())
    applied = int(client.hget(keys.stats, "applied") or 0)
    ranked: Any = client.zrange(keys.popularity, 0, -1, withscores=True)
    pop = {k.decode(): float(v) for k, v in ranked}
    pop_ok = set(pop) == set(expected.popularity) and all(
        abs(pop[k] - v) < 1e-6 for k, v in expected.popularity.items()
    )
    return {
        "lost": missing + max(0, expected.applied - applied),
        "duplicated": extra + max(0, applied - expected.applied),
        "popularity_matches": pop_ok,
        "applied": applied,
        "expected_applied": expected.applied,
    }


def bytes_per_user(client: redis.Redis, history_len: int, users: int = 2000) -> float:
    """Redis memory added per user holding a full history and a profile (all per-user structures)."""
    prefix = f"bench-mem-{uuid.uuid4().hex[:6]}:"
    settings = load_settings(environ={}, history_len=history_len, event_weights={"view": 1.0}, history_ttl_s=86400)
    store = RedisStore(client, Keys(prefix), store_options(settings))
    from schemas.events import ProfileEvent

    t0 = 1_700_000_000_000
    store.apply_events([(InteractionEvent("warm", "warm", f"i{i}", "view", t0 + i), t0) for i in range(1000)], t0)
    before = int(client.info("memory")["used_memory"])
    for start in range(0, users, 100):
        batch = [
            (InteractionEvent(f"{u}-{k}", f"user{u}", f"i{(u * 7 + k) % 1000}", "view", t0 + k * 1000), t0)
            for u in range(start, start + 100)
            for k in range(history_len)
        ]
        store.apply_events(batch, t0)
        store.apply_profiles(
            [
                (ProfileEvent(f"user{u}", {"country": "US", "age_band": "25-34", "gender": "F"}, t0), t0)
                for u in range(start, start + 100)
            ]
        )
    client.delete(Keys(prefix).dirty)  # transient: emptied by the serving loop
    after = int(client.info("memory")["used_memory"])
    drop_prefix(client, prefix)
    return (after - before) / users


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process, redis-server and the broker (Linux /proc)."""
    out = {"recd": time.process_time()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        seconds = process_cpu_seconds(pid) if comm.startswith(("redis-server", "tansu")) else None
        if seconds is not None:
            name = "redis" if comm.startswith("redis") else "broker"
            out[name] = out.get(name, 0.0) + seconds
    return out


def start_servers() -> tuple[list[LocalProcess], str, str]:
    """(servers started here, to stop; broker address; Redis URL): the broker at RECD_KAFKA_BOOTSTRAP or an
    embedded one, the Redis at RECD_REDIS_URL (default local) or a redis-server started here."""
    servers: list[LocalProcess] = []
    bootstrap = os.environ.get("RECD_KAFKA_BOOTSTRAP")
    if not bootstrap:
        servers.append(start_broker())
        bootstrap = servers[-1].address
    url = os.environ.get("RECD_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_answers(url):
        servers.append(start_redis())
        url = servers[-1].address
    return servers, bootstrap, url


def parse_args() -> argparse.Namespace:
    """The command line: events, users, items and partitions of the run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    return parser.parse_args()


def run_settings(bootstrap: str, url: str) -> Settings:
    """Settings for one run on these servers: topics, consumer group and Redis prefix of its own."""
    tag = uuid.uuid4().hex[:8]
    return load_settings(
        kafka_bootstrap=bootstrap,
        redis_url=url,
        redis_prefix=f"bench-{tag}:",
        events_topic=f"bench-ev-{tag}",
        profiles_topic=f"bench-prof-{tag}",
        consumer_group=f"bench-{tag}",
        session_timeout_ms=6000,
    )


def dead_letters(metrics: Metrics) -> int:
    """Events the ingest role counted as invalid (sent to the dead-letter topic)."""
    return int(
        sum(
            s.value
            for m in metrics.registry.collect()
            if m.name == "recd_events_invalid"
            for s in m.samples
            if s.name.endswith("_total")
        )
    )


def measure(settings: Settings, client: redis.Redis, args: argparse.Namespace) -> dict[str, object]:
    """Produce, ingest and verify ``args.events`` events: the result, all but ``python_loop_s``."""
    create_topics(settings, args.partitions)
    spec = SyntheticSpec(
        users=args.users, items=args.items, seed=1, start_ms=int(time.time() * 1000) - 86_400_000, step_ms=50
    )
    print(f"producing {args.events} events ...", flush=True)
    produce_rate = produce(settings, spec, args.events)
    print(f"produced at {produce_rate:,.0f}/s; ingesting ...", flush=True)
    cpu_before = cpu_seconds()
    seconds, metrics = ingest(settings, args.events, client)
    cpu = {name: round((after - cpu_before.get(name, 0.0)) / seconds, 2) for name, after in cpu_seconds().items()}
    profiles = {
        p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in synthetic_profiles(spec, 0)
    }
    print("verifying against the ground truth ...", flush=True)
    result = verify(settings, client, list(synthetic_events(spec, args.events)), profiles)
    result.update(
        {
            "events": args.events,
            "events_per_s": round(args.events / seconds),
            "seconds": round(seconds, 2),
            "produce_per_s": round(produce_rate),
            "dlq": dead_letters(metrics),
            "redis_bytes_per_user": round(bytes_per_user(client, settings.history_len)),
            "history_len": settings.history_len,
            "partitions": args.partitions,
            "cpu_cores_used": cpu,
        }
    )
    return result


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    servers, bootstrap, url = start_servers()
    settings = run_settings(bootstrap, url)
    client = redis.Redis.from_url(url)
    try:
        result = measure(settings, client, args)
        result["python_loop_s"] = [loop_before, python_loop_seconds()]
        drop_prefix(client, settings.redis_prefix)
    finally:
        for server in servers:
            server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
