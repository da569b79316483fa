"""Catalogue freshness benchmark: a new item's catalogue record -> the item retrievable, over a large catalogue,
while events stream.

    python -m bench.new_items --items 50000 --new-items 600 --item-rate 10 --event-rate 2000 [--redis-cluster 3]

Starts the embedded broker (or uses RECD_KAFKA_BOOTSTRAP) and the Redis at RECD_REDIS_URL (``--redis-cluster
N``: a local cluster), publishes a synthetic world's profiles, catalogue (``--items`` records: ``genre`` names
an item's taste cluster, ``price_band`` mostly the cluster's) and ``--warmup-events`` events (which leave part
of the catalogue without any: cold items, placed by their attributes), runs ``recd run --roles ingest`` and
``recd run --roles serve``, trains the first model with a one-shot ``recd train`` and waits until it serves
(users' lists and the similar-items lists a swap rewrites carry its version). Then, for ``--new-items`` items
the model has never seen, one catalogue record each at ``--item-rate`` records/s (the attributes of a random
cluster, no events), while ``--event-rate`` events/s of the same world stream beside them. A poller reads the
new items' keys every few milliseconds; an item's latency is the time from just before its record is sent to
the first poll that finds its similar-items list.

Serving writes that list after the item has joined the served index's cold items (from then on users' lists
can hold it), in the same pipeline as its neighbours' lists, which now may name it. The end checks the
placement: ``home_share`` (of the new items' neighbours among the model's items, the share in the cluster
their attributes name; a random placement gives about 1/``--clusters``) and ``in_neighbours_share`` (new items
that some neighbour's list names; low where many cold items share the same attributes, hence the same
vector). Last line: JSON with the latency percentiles (``p50_ms``, ``p95_ms``, ``p99_ms``, ``max_ms``;
``ingested_*``: to the record in the catalogue ingest keeps, the first of the two stages), ``missing`` (items
never listed within ``--timeout-s``, the first of them in ``missing_items``), the serve process's CPU share
over the measured phase and ``target_p99_ms`` (5,000). Every key the run wrote is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import RedisTarget, add_cluster_args, bench_world
from bench.common import process_cpu_seconds, python_loop_seconds
from bench.freshness import LoadProducer, encoded, env_for, first_model, stop_daemons
from daemon.dev.publish import make_producer, publish_catalogue, publish_synthetic
from daemon.dev.synthetic import PRICE_BANDS, SyntheticSpec, SyntheticWorld, synthetic_events
from daemon.runtime.app import create_topics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from daemon.train.publish import read_pointer
from schemas.catalogue import CatalogueEvent
from schemas.records import SimilarList

TARGET_P99_MS = 5_000
POLL_S = 0.005  # the poller's pause between reads of the outstanding items' keys


@dataclass
class Arrivals:
    """New items: when each record was sent and when its similar-items list was first seen."""

    sent: dict[str, float] = field(default_factory=dict)
    stored: dict[str, float] = field(default_factory=dict)  # its record first seen in the catalogue (ingest)
    seen: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def outstanding(self) -> list[str]:
        with self.lock:
            return [item for item in self.sent if item not in self.seen]

    def poll(self, settings: Settings) -> None:
        """Until stopped: one pipelined EXISTS per outstanding item, every ``POLL_S``."""
        client, keys = topology_of(settings).client, keys_of(settings)
        while not self.stop.is_set():
            items = self.outstanding()
            if items:
                pipe = client.pipeline(transaction=False)
                for item in items:
                    pipe.hexists(keys.catalogue(keys.shard_of(item)), item)
                    pipe.exists(keys.sim(item))
                found = pipe.execute()
                now = time.time()
                with self.lock:
                    for item, stored, listed in zip(items, found[::2], found[1::2], strict=True):
                        if stored:
                            self.stored.setdefault(item, now)
                        if listed:
                            self.seen[item] = now
            time.sleep(POLL_S)

    def latencies_ms(self, until: dict[str, float]) -> np.ndarray:  # type: ignore[type-arg]
        """Per item that got there, ms from its send to ``until`` (``seen``: listed, ``stored``: ingested)."""
        return np.asarray([1000 * (until[i] - self.sent[i]) for i in self.sent if i in until])


def percentiles(lat: np.ndarray, prefix: str = "") -> dict[str, float]:  # type: ignore[type-arg]
    if not len(lat):
        return {}
    return {**{f"{prefix}p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)},
            f"{prefix}max_ms": round(float(lat.max()), 1)}  # fmt: skip


def new_item(world: SyntheticWorld, k: int, rng: np.random.Generator, ts_ms: int) -> tuple[CatalogueEvent, int]:
    """The k-th new item's record, with the attributes an item of a random cluster has; (record, cluster)."""
    cluster = int(rng.integers(0, world.spec.clusters))
    band = PRICE_BANDS[cluster % len(PRICE_BANDS)]
    return CatalogueEvent(f"new-{k}", {"genre": (f"g{cluster}",), "price_band": (band,)}, True, ts_ms), cluster


def stream(settings: Settings, args: argparse.Namespace, world: SyntheticWorld, arrivals: Arrivals) -> dict[str, int]:
    """The measured phase: ``--event-rate`` events/s in 10 ms slices and a new item's record every
    1/``--item-rate`` s, until every new item is sent. Returns each new item's cluster."""
    events = encoded(SyntheticSpec(**{**world.spec.__dict__, "seed": 2, "start_ms": int(time.time() * 1000)}),
                     int(args.event_rate * (args.new_items / args.item_rate + 1)))  # fmt: skip
    load, items = LoadProducer(settings, args.producer), make_producer(settings)
    rng, clusters = np.random.default_rng(7), dict[str, int]()
    per_slice, sent, started = max(1, args.event_rate // 100), 0, time.time()
    try:
        while len(clusters) < args.new_items:
            for key, value in events[sent : sent + per_slice]:
                load.send(key, value)
            sent += per_slice
            load.tick()
            if time.time() - started >= len(clusters) / args.item_rate:
                record, clusters[record.item_id] = new_item(world, len(clusters), rng, int(time.time() * 1000))
                with arrivals.lock:
                    arrivals.sent[record.item_id] = time.time()
                publish_catalogue(items, settings.items_topic, [record])  # flushes: the record is on the broker
            time.sleep(max(0.0, started + sent / max(1, args.event_rate) - time.time()))
    finally:
        load.close()
        items.close()
    return clusters


def placement(settings: Settings, world: SyntheticWorld, clusters: dict[str, int]) -> dict[str, float]:
    """How the new items were placed: ``home_share`` of their neighbours in the cluster their attributes name,
    ``in_neighbours_share`` of them named by some neighbour's similar-items list."""
    client, keys = topology_of(settings).client, keys_of(settings)
    home = total = named = 0
    for item, cluster in clusters.items():
        raw = client.get(keys.sim(item))
        if raw is None:
            continue
        neighbours = [n for n in SimilarList.from_json(raw).items if n.startswith("i")]
        home += sum(int(world.item_cluster[int(n[1:])]) == cluster for n in neighbours)
        total += len(neighbours)
        theirs = [client.get(keys.sim(n)) for n in neighbours]
        named += any(r is not None and item in SimilarList.from_json(r).items for r in theirs)
    return {
        "home_share": round(home / max(1, total), 4),
        "in_neighbours_share": round(named / max(1, len(clusters)), 4),
    }


def measure(settings: Settings, args: argparse.Namespace, world: SyntheticWorld, serve_pid: int) -> dict[str, Any]:
    """Stream, poll until every new item is listed (or ``--timeout-s``), and summarise."""
    arrivals = Arrivals()
    poller = threading.Thread(target=arrivals.poll, args=(settings,), daemon=True)
    poller.start()
    cpu_before, started = process_cpu_seconds(serve_pid) or 0.0, time.time()
    clusters = stream(settings, args, world, arrivals)
    deadline = time.time() + args.timeout_s
    while arrivals.outstanding() and time.time() < deadline:
        time.sleep(0.1)
    arrivals.stop.set()
    poller.join()
    elapsed, cpu = time.time() - started, (process_cpu_seconds(serve_pid) or 0.0) - cpu_before
    return {
        "new_items": len(clusters),
        "item_rate": args.item_rate,
        "event_rate": args.event_rate,
        **percentiles(arrivals.latencies_ms(arrivals.seen)),
        **percentiles(arrivals.latencies_ms(arrivals.stored), "ingested_"),
        "missing": len(arrivals.outstanding()),
        "missing_items": arrivals.outstanding()[:10],
        "serve_cpu_share": round(cpu / elapsed, 3),
        **placement(settings, world, clusters),
        "target_p99_ms": TARGET_P99_MS,
    }


def settle(settings: Settings, spec: SyntheticSpec, user: str, sample: int = 500) -> None:
    """Until the serve process serves the published model (``user``'s list is that model's, not a cold-start
    list written while the index built) and has rewritten the similar-items lists that follow a swap (a
    sample of the catalogue's items, the never-interacted ones included, list that model's version)."""
    client, keys = topology_of(settings).client, keys_of(settings)
    pointer = read_pointer(client, keys)
    assert pointer is not None
    world = SyntheticWorld(spec)
    items = [world.item_id(int(i)) for i in np.random.default_rng(3).choice(spec.items, sample, replace=False)]

    def version_of(raw: Any) -> str | None:
        return str(json.loads(raw)["model_version"]) if raw else None

    def settled() -> bool:
        if version_of(client.get(keys.rec(user))) != pointer.version:
            return False
        return all(version_of(client.get(keys.sim(i))) == pointer.version for i in items)

    deadline = time.monotonic() + 600
    while not settled():
        if time.monotonic() > deadline:
            raise TimeoutError("the serve process did not settle on the first model in 600 s")
        time.sleep(0.5)
    print("swap settled: ok", flush=True)


def run(settings: Settings, args: argparse.Namespace, model_dir: Path, target: RedisTarget) -> dict[str, Any]:
    """Warm up, start ingest and serve, train once, then measure."""
    reader = StateReader(topology_of(settings), keys_of(settings))
    spec = SyntheticSpec(
        users=args.users,
        items=args.items,
        clusters=args.clusters,
        seed=1,
        start_ms=int(time.time() * 1000) - args.warmup_events * 5 - 60_000,
        step_ms=5,
    )
    create_topics(settings)
    publish_synthetic(settings, spec, args.warmup_events)  # profiles, the catalogue, then the events
    env = env_for(settings, model_dir, target)
    daemons = [
        subprocess.Popen([sys.executable, "-m", "daemon", "run", "--roles", r], env=env) for r in ("ingest", "serve")
    ]
    try:
        first_user = next(iter(synthetic_events(spec, 1)))["user_id"]
        first_model(reader, env, args.warmup_events, [first_user])
        settle(settings, spec, first_user)
        return {
            "users": args.users,
            "items": args.items,
            "warmup_events": args.warmup_events,
            **measure(settings, args, SyntheticWorld(spec), daemons[1].pid),
        }
    finally:
        stop_daemons(daemons)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=50_000, help="items of the catalogue the model is trained on")
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--warmup-events", type=int, default=500_000)
    ap.add_argument("--new-items", type=int, default=600, help="items sent during the measured phase")
    ap.add_argument("--item-rate", type=float, default=10.0, help="new items' records per second")
    ap.add_argument("--event-rate", type=int, default=2_000, help="events per second beside them")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="how long to wait for the last lists")
    ap.add_argument("--producer", choices=("confluent", "kafka-python"), default="confluent")
    add_cluster_args(ap)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    with bench_world(args, "items") as world:
        result = run(world.settings, args, world.folder / "models", world.target)
    print(json.dumps({**result, "python_loop_s": [loop_before, python_loop_seconds()]}))


if __name__ == "__main__":
    main()
