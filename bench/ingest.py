"""Ingest benchmark: produce N synthetic events, ingest them, verify Redis, report.

    python bench/ingest.py --events 1000000

    python bench/ingest.py --events 1000000 --redis-cluster 3 [--cluster-replicas 1 --wait-replicas 1]

    python bench/ingest.py --events 1000000 --rebuild

Uses RECD_KAFKA_BOOTSTRAP / RECD_REDIS_URL when set, else starts the embedded
broker (and a local redis-server if none answers); ``--redis-cluster N`` starts
a local Redis Cluster of N primaries instead (bench/cluster.py). The last line
printed is one JSON object: events_per_s, lost, duplicated, dlq,
redis_bytes_per_user, redis_cpu_us_per_event, primary_write_share,
max_slot_write_share, shards, primaries, replicas, wait_replicas, ...; with
``--rebuild``, a ``rebuild`` entry: ``recd rebuild`` of the same topics into a
new prefix (seconds, seconds per million events, lost and duplicated against
the ground truth).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import (
    RedisTarget,
    SlotLoad,
    add_cluster_args,
    compare,
    load_figures,
    primary_loads,
    redis_target,
    topology_figures,
)
from bench.common import drop_prefix, isolated_settings, process_cpu_seconds, python_loop_seconds
from bench.groundtruth import replay
from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.dev.publish import make_producer
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_ingest, create_topics
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.profiles import finest_segment
from daemon.runtime.rebuild import rebuild
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader, each_shard
from schemas.events import InteractionEvent, ProfileEvent


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


def ingest(settings: Settings, total: int, topology: Topology) -> tuple[float, Metrics, dict[str, object]]:
    """Run the ingest role until Redis has handled every event; returns (seconds, metrics, the primaries'
    load figures over the run: bench/cluster.py)."""
    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    started = None
    names = ("recd_events_applied_total", "recd_events_duplicate_total", "recd_events_stale_total")
    before = primary_loads(topology)
    try:
        while sum(metrics.registry.get_sample_value(n) or 0 for n in names) < total:
            polled = worker.step()
            if started is None and polled:
                started = time.perf_counter()
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        worker.shutdown()
    return elapsed, metrics, load_figures(before, primary_loads(topology), total)


def verify(
    settings: Settings, topology: Topology, events: list[dict[str, object]], profiles: dict[str, str]
) -> dict[str, object]:
    """Redis against the reference model (every user's history, merged popularity), and the workload's write
    units by slot: an event or a profile one in its user's shard slot, a new item one in the item dictionary's
    slot."""
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold, profiles)
    keys = keys_of(settings)
    result = compare(StateReader(topology, keys), expected)
    load = SlotLoad(keys)
    load.events(str(e["user_id"]) for e in events)
    load.events(profiles)
    load.new_items(len({e["item_id"] for e in events}))
    return {**result, **load.figures(topology), **topology_figures(topology, keys)}


PROFILE = {"country": "US", "age_band": "25-34", "gender": "F"}


def memory_figures(topology: Topology, history_len: int, users: int = 2000) -> dict[str, int]:
    """Redis memory, summed over the primaries: ``redis_bytes_per_user``, added per user holding a full history
    and a profile (all per-user structures) once every shard's aggregates hold the catalogue's 1,000 items; and
    ``redis_aggregate_bytes_per_item``, what those aggregates (popularity, trending, segment counts in every
    shard) take per item."""
    prefix = f"bench-mem-{uuid.uuid4().hex[:6]}:"
    settings = load_settings(environ={}, history_len=history_len, event_weights={"view": 1.0}, history_ttl_s=86400)
    keys = Keys(prefix, settings.redis_shards)
    store = RedisStore(topology, keys, store_options(settings))
    t0 = 1_700_000_000_000
    empty = used_memory(topology)
    warm_aggregates(store, keys, t0)
    before = used_memory(topology)
    for start in range(0, users, 100):
        batch = [
            (InteractionEvent(f"{u}-{k}", f"user{u}", f"i{(u * 7 + k) % 1000}", "view", t0 + k * 1000), t0)
            for u in range(start, start + 100)
            for k in range(history_len)
        ]
        store.apply_events(batch, t0)
        store.apply_profiles([(ProfileEvent(f"user{u}", PROFILE, t0), t0) for u in range(start, start + 100)])
    each_shard(topology, keys, lambda p, s: p.delete(keys.dirty(s)))  # transient: emptied by the serving loop
    after = used_memory(topology)
    drop_prefix(topology.client, prefix)
    per_user = (after - before) / users
    return {
        "redis_bytes_per_user": round(per_user),
        "redis_aggregate_bytes_per_item": round((before - empty - keys.shards * per_user) / 1000),
    }


def warm_aggregates(store: RedisStore, keys: Keys, t0: int) -> None:
    """A user in every shard, with a profile and an event on each of the 1,000 items: every shard's aggregates
    hold the whole catalogue (as they come to on a running system), the changed-user queues left empty."""
    warm: dict[int, str] = {}
    n = 0
    while len(warm) < keys.shards:
        warm.setdefault(keys.shard_of(f"warm{n}"), f"warm{n}")
        n += 1
    store.apply_profiles([(ProfileEvent(user, PROFILE, t0), t0) for user in warm.values()])
    for user in warm.values():
        store.apply_events(
            [(InteractionEvent(f"{user}-{i}", user, f"i{i}", "view", t0 + i * 1000), t0) for i in range(1000)], t0
        )
    each_shard(store.topology, keys, lambda p, s: p.delete(keys.dirty(s)))


def used_memory(topology: Topology) -> int:
    return sum(int(node.info("memory")["used_memory"]) for node in topology.primaries())


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


def start_servers(args: argparse.Namespace) -> tuple[list[LocalProcess], str, RedisTarget]:
    """(servers started here, to stop; broker address; Redis): the broker at RECD_KAFKA_BOOTSTRAP or an
    embedded one; a local Redis Cluster (``--redis-cluster``), the cluster at RECD_REDIS_URL
    (RECD_REDIS_CLUSTER=true), or the Redis at RECD_REDIS_URL (default local) or a redis-server started here."""
    servers: list[LocalProcess] = []
    bootstrap = os.environ.get("RECD_KAFKA_BOOTSTRAP")
    if not bootstrap:
        servers.append(start_broker())
        bootstrap = servers[-1].address
    url = os.environ.get("RECD_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        target = redis_target(args, url)
        if not target.cluster and not redis_answers(url):
            servers.append(start_redis())
            target.url = servers[-1].address
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers, bootstrap, target


def parse_args() -> argparse.Namespace:
    """The command line: events, users, items and partitions of the run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="then `recd rebuild` the topics into a new prefix, timed, and check that state against the ground truth",
    )
    add_cluster_args(parser)
    return parser.parse_args()


def run_settings(bootstrap: str, target: RedisTarget) -> Settings:
    """Settings for one run on these servers (bench.common.isolated_settings)."""
    return isolated_settings(bootstrap, "bench", **target.settings())


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


def measure(settings: Settings, topology: Topology, args: argparse.Namespace) -> dict[str, object]:
    """Produce, ingest and verify ``args.events`` events: the result, all but ``python_loop_s``."""
    create_topics(settings, args.partitions)
    spec = SyntheticSpec(
        users=args.users, items=args.items, seed=1, start_ms=int(time.time() * 1000) - 86_400_000, step_ms=50
    )
    print(f"producing {args.events} events ...", flush=True)
    produce_rate = produce(settings, spec, args.events)
    print(f"produced at {produce_rate:,.0f}/s; ingesting ...", flush=True)
    cpu_before = cpu_seconds()
    seconds, metrics, load = ingest(settings, args.events, topology)
    cpu = {name: round((after - cpu_before.get(name, 0.0)) / seconds, 2) for name, after in cpu_seconds().items()}
    profiles = {
        p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in synthetic_profiles(spec, 0)
    }
    print("verifying against the ground truth ...", flush=True)
    result = verify(settings, topology, list(synthetic_events(spec, args.events)), profiles)
    if args.rebuild:
        result["rebuild"] = measure_rebuild(settings, topology, spec, args.events, profiles)
    result.update(
        {
            **load,
            "events": args.events,
            "events_per_s": round(args.events / seconds),
            "seconds": round(seconds, 2),
            "produce_per_s": round(produce_rate),
            "dlq": dead_letters(metrics),
            **memory_figures(topology, settings.history_len),
            "history_len": settings.history_len,
            "partitions": args.partitions,
            "cpu_cores_used": cpu,
        }
    )
    return result


def measure_rebuild(
    settings: Settings, topology: Topology, spec: SyntheticSpec, n: int, profiles: dict[str, str]
) -> dict[str, object]:
    """``recd rebuild`` of the topics into a new prefix (what the command runs), timed and checked against
    the ground truth; the new prefix is dropped after."""
    prefix = f"{settings.redis_prefix.rstrip(':')}-rebuilt:"
    print(f"rebuilding into {prefix} ...", flush=True)
    started = time.perf_counter()
    done = rebuild(settings, prefix)
    seconds = time.perf_counter() - started
    try:
        check = verify(settings.replace(redis_prefix=prefix), topology, list(synthetic_events(spec, n)), profiles)
    finally:
        drop_prefix(topology.client, prefix)
    return {
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds),
        "seconds_per_million_events": round(seconds * 1_000_000 / n, 1),
        "events_read": done["events_read"],
        **{k: check[k] for k in ("lost", "duplicated", "popularity_matches", "applied", "expected_applied")},
    }


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    servers, bootstrap, target = start_servers(args)
    settings = run_settings(bootstrap, target)
    topology = topology_of(settings)
    try:
        result = measure(settings, topology, args)
        result["python_loop_s"] = [loop_before, python_loop_seconds()]
        drop_prefix(topology.client, settings.redis_prefix)
    finally:
        for server in servers:
            server.stop()
        target.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
