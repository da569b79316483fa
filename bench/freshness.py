"""Freshness benchmark: event produced -> that user's list changed in Redis, at a steady rate.

    python bench/freshness.py --rate 10000 --seconds 60 --serve-workers 2 [--redis-cluster 3]

Starts the embedded broker (or uses RECD_KAFKA_BOOTSTRAP) and the Redis at
RECD_REDIS_URL, warms up with synthetic events (1M by default: histories as
long as a running system's, since serving cost grows with them), runs ``recd
run --roles ingest`` and ``--serve-workers`` ``recd run --roles serve``
processes (replicas sharing the changed-users queue; ``--one-process``: both
roles in one), trains the first model with a one-shot ``recd train`` (in
production the trainer is its own replica), waits until it serves, then
publishes a steady stream at ``--rate`` events/s. Among the stream, tracer
users (who get no other events) receive one event every ``--tracer-gap-s``;
a poller reads their lists every few milliseconds, and the latency of each
tracer event is the time from just before the producer's send to the first
poll that sees the user's list rewritten. Last line: JSON with p50/p95/p99/max,
the p99 of each 10 s window (a drift upwards means serving falls behind),
where the time went (``stages``: ingest, queue, serve; see freshness_stats.Tracer) and the CPU
cores each process used while the stream ran (``cpu_cores``: the daemons by
role, this bench's producer and poller, the broker it started, a local Redis).
Then, once every event is ingested, Redis is checked against the reference
model (bench/groundtruth.py: every user's history, the merged popularity):
``lost``, ``duplicated``; and the load's spread over Redis (bench/cluster.py):
``events_per_s`` ingested while the stream ran, ``redis_cpu_us_per_event``,
``primary_write_share``, ``max_slot_write_share`` (an event is one write unit in
its user's shard slot and, an upper bound, one list write in its ``rec:`` key's
slot), ``shards``, ``primaries``, ``replicas``, ``wait_replicas``.
``--redis-cluster N`` runs on a local Redis Cluster of N primaries; with
RECD_REDIS_CLUSTER=true, on the cluster at RECD_REDIS_URL.
Every key the run wrote is deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import RedisTarget, add_cluster_args, bench_world
from bench.common import python_loop_seconds
from bench.freshness_stats import PhaseMeter, Tracer, latency_summary, process_ids, verify_run
from daemon.dev.publish import make_producer, publish_synthetic
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.runtime.app import create_topics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader


def env_for(settings: Settings, model_dir: Path, target: RedisTarget) -> dict[str, str]:
    return {
        **os.environ,
        **target.env(),
        "RECD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RECD_REDIS_PREFIX": settings.redis_prefix,
        "RECD_EVENTS_TOPIC": settings.events_topic,
        "RECD_PROFILES_TOPIC": settings.profiles_topic,
        "RECD_ITEMS_TOPIC": settings.items_topic,
        "RECD_CONSUMER_GROUP": settings.consumer_group,
        "RECD_MODEL_DIR": str(model_dir),
        "RECD_METRICS_PORT": "0",
        "RECD_TRAIN_MIN_EVENTS": "10000",
        "RECD_TRAIN_INTERVAL_S": "100000",
        "RECD_LOG_LEVEL": "WARNING",
    }


def wait(label: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(label)
        time.sleep(0.2)
    print(f"{label}: ok", flush=True)


class LoadProducer:
    """The load generator's producer: librdkafka (confluent-kafka) by default.

    The stream's producers are not on recd's machine in production; here they share its 2 cores, and
    kafka-python's per-message Python cost took ~45% of a core at 10k events/s. librdkafka with the
    Java client's murmur2 partitioner (so keys land where kafka-python puts them) takes a fraction.
    ``kind="kafka-python"`` keeps the old generator for comparison."""

    def __init__(self, settings: Settings, kind: str) -> None:
        self.topic, self.kind = settings.events_topic, kind
        if kind == "kafka-python":
            self.legacy = make_producer(settings)
            return
        if settings.kafka_security_protocol != "PLAINTEXT":
            raise SystemExit("--producer confluent speaks PLAINTEXT only here; use --producer kafka-python")
        from confluent_kafka import Producer

        self.fast = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "acks": "all",
                "linger.ms": 20,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000,
            }
        )

    def send(self, key: bytes, value: bytes) -> None:
        if self.kind == "kafka-python":
            self.legacy.send(self.topic, key=key, value=value)
            return
        while True:
            try:
                self.fast.produce(self.topic, value=value, key=key)
                return
            except BufferError:
                self.fast.poll(0.01)

    def tick(self) -> None:
        """Between slices: serve delivery reports (librdkafka) or flush the batch (kafka-python)."""
        if self.kind == "kafka-python":
            self.legacy.flush(timeout=5)
        else:
            self.fast.poll(0)

    def close(self) -> None:
        if self.kind == "kafka-python":
            self.legacy.flush()
            self.legacy.close()
        else:
            self.fast.flush(30)


def encoded(spec: SyntheticSpec, n: int) -> list[tuple[bytes, bytes]]:
    """n (key, value) messages, made before the clock starts: the generator is not what is measured."""
    return [(ev["user_id"].encode(), encode(ev)) for ev in synthetic_events(spec, n)]


def steady(
    producer: LoadProducer, stream: list[tuple[bytes, bytes]], tracer: Tracer, rate: int, seconds: float, gap_s: float
) -> int:
    """Publish ``rate`` events/s from ``stream`` for ``seconds`` in 10 ms slices; tracer events spread over users."""
    per_slice, sent, started = max(1, rate // 100), 0, time.time()
    next_tracer, t_index = started, 0
    while (now := time.time()) - started < seconds:
        for key, value in stream[sent : sent + per_slice]:
            producer.send(key, value)
        sent += per_slice
        if now >= next_tracer:
            t_index += 1
            user, event = tracer.event(t_index)
            tracer.sent(user, time.time())
            producer.send(user.encode(), encode(event))
            next_tracer = now + gap_s / len(tracer.users)
        if sent % (per_slice * 10) == 0:
            producer.tick()
        time.sleep(max(0.0, started + sent / rate - time.time()))
    producer.close()
    return sent


def parse_args() -> argparse.Namespace:
    """The command line: rate, duration, warm-up, world size, tracers, process layout and load client."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--warmup-events",
        type=int,
        default=1_000_000,
        help="events before the measured phase: 50 per user fills histories as a running system has them",
    )
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--tracers", type=int, default=100)
    ap.add_argument("--tracer-gap-s", type=float, default=2.0)
    ap.add_argument("--one-process", action="store_true", help="ingest and serve in one process (default: two)")
    ap.add_argument(
        "--serve-workers",
        type=int,
        default=1,
        help="serve processes sharing the changed-users queue (replicas; default 1)",
    )
    ap.add_argument(
        "--producer",
        choices=("confluent", "kafka-python"),
        default="confluent",
        help="load generator client (default: librdkafka, the lighter one; see LoadProducer)",
    )
    add_cluster_args(ap)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    with bench_world(args, "fresh") as world:
        broker_pid = world.broker.proc.pid if world.broker else None
        result = run(world.settings, args, world.folder / "models", broker_pid, world.target)
    print(json.dumps({**result, "python_loop_s": [loop_before, python_loop_seconds()]}))


def run(
    settings: Settings, args: argparse.Namespace, model_dir: Path, broker_pid: int | None, target: RedisTarget
) -> dict[str, Any]:
    """Warm up, start the daemons, train, run the measured stream, wait until it is ingested, check Redis."""
    topology, keys = topology_of(settings), keys_of(settings)
    reader = StateReader(topology, keys)
    now = int(time.time() * 1000)
    spec, tracer_users = warm_up(settings, args, now)
    env = env_for(settings, model_dir, target)
    roles = ["ingest,serve"] if args.one_process else ["ingest"] + ["serve"] * args.serve_workers
    daemons = [subprocess.Popen([sys.executable, "-m", "daemon", "run", "--roles", r], env=env) for r in roles]
    try:
        first_model(reader, env, args.warmup_events, tracer_users)
        stream = encoded(
            SyntheticSpec(**{**spec.__dict__, "start_ms": now, "seed": 2, "step_ms": 1}),
            int(args.rate * (args.seconds + 1)),
        )
        tracer = Tracer(topology, keys, tracer_users, args.items)
        pids = process_ids(topology, broker_pid, daemons, roles) | target.pids()
        started, achieved, phase, sent = measure(
            LoadProducer(settings, args.producer), stream, tracer, args, PhaseMeter(topology, reader, pids)
        )
        wait_ingested(reader, len(tracer_users) + args.warmup_events + sent + len(tracer.events))
    finally:
        stop_daemons(daemons)
    print("verifying against the ground truth ...", flush=True)
    warm = [warm_tracer_event(user, now) for user in tracer_users]
    measured = [orjson.loads(value) for _, value in stream[:sent]] + tracer.events
    truth = verify_run(settings, reader, chain(warm, synthetic_events(spec, args.warmup_events)), measured)
    return {
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        **latency_summary(tracer, started),
        **phase,
        "target_p99_ms": 1000,
        "events": len(measured),
        **truth,
    }


def warm_up(settings: Settings, args: argparse.Namespace, now: int) -> tuple[SyntheticSpec, list[str]]:
    """Topics, then the warm-up published: (its synthetic spec, the tracer users)."""
    create_topics(settings)
    # warm-up events end a minute ago; the steady stream's event times run from now, 1 ms apart on average
    spec = SyntheticSpec(
        users=args.users, items=args.items, seed=1, start_ms=now - args.warmup_events * 5 - 60_000, step_ms=5
    )
    tracer_users = [f"tracer-{k}" for k in range(args.tracers)]
    publish_warmup(settings, spec, tracer_users, args.warmup_events, now)
    return spec, tracer_users


def wait_ingested(reader: StateReader, total: int) -> None:
    """Until ingest has handled ``total`` events (applied, duplicate or stale)."""

    def handled() -> bool:
        totals = reader.totals()
        return totals["applied"] + totals["duplicates"] + totals["stale"] >= total

    wait("every event ingested", handled, 300)


def first_model(reader: StateReader, env: dict[str, str], warmup_events: int, users: list[str]) -> None:
    """Wait for the warm-up to be ingested, train once, then until that model serves (no user left queued)."""
    client, keys = reader.client, reader.keys
    wait("warm-up ingested", lambda: reader.totals()["applied"] >= warmup_events, 600)
    # the trainer runs apart (its own replica in production), once, before the measured phase
    subprocess.run([sys.executable, "-m", "daemon", "train"], env=env, check=True, stdout=subprocess.DEVNULL)
    wait(
        "first model served",
        lambda: client.exists(keys.model_current) and client.exists(keys.rec(users[-1])) and reader.queued() == 0,
        600,
    )


def stop_daemons(daemons: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the daemons, then wait for each (30 s at most apiece)."""
    for daemon in daemons:
        daemon.terminate()
    for daemon in daemons:
        daemon.wait(30)


def warm_tracer_event(user: str, now: int) -> dict[str, Any]:
    return {"event_id": f"w-{user}", "user_id": user, "item_id": "i1", "type": "click", "ts": now}


def publish_warmup(settings: Settings, spec: SyntheticSpec, tracer_users: list[str], events: int, now: int) -> None:
    """One event for each tracer user (so each has a list before the stream), then ``events`` synthetic ones."""
    producer = make_producer(settings)
    for user in tracer_users:
        producer.send(settings.events_topic, key=user.encode(), value=encode(warm_tracer_event(user, now)))
    producer.close()
    publish_synthetic(settings, spec, events)


def measure(
    producer: LoadProducer,
    stream: list[tuple[bytes, bytes]],
    tracer: Tracer,
    args: argparse.Namespace,
    meter: PhaseMeter,
) -> tuple[float, float, dict[str, Any], int]:
    """The measured phase: steady stream with tracer events, lists polled. Returns (start time, events/s,
    what the phase cost (PhaseMeter), stream events sent)."""
    gc.freeze()  # the stream's ~10^6 objects stay out of collections: no GC pauses in the producer/poller
    time.sleep(3)
    poller = threading.Thread(target=tracer.poll, daemon=True)
    poller.start()
    started = time.time()
    meter.start()
    sent = min(len(stream), steady(producer, stream, tracer, args.rate, args.seconds, args.tracer_gap_s))
    achieved = sent / (time.time() - started)
    phase = meter.stop()
    time.sleep(5)
    tracer.stop.set()
    poller.join()
    return started, achieved, phase, sent


if __name__ == "__main__":
    main()
