"""Freshness benchmark: event produced -> that user's list changed in Redis, at a steady rate.

    python bench/freshness.py --rate 10000 --seconds 60 --serve-workers 2

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
where the time went (``stages``: ingest, queue, serve; see Tracer) and the CPU
cores each process used while the stream ran (``cpu_cores``: the daemons by
role, this bench's producer and poller, the broker it started, a local Redis).
Every key the run wrote is deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, process_cpu_seconds, python_loop_seconds
from daemon.dev.embedded import start_broker
from daemon.dev.publish import make_producer, publish_synthetic
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.ingest.topics import ensure_topics
from daemon.runtime.keys import Keys
from daemon.runtime.settings import Settings, load_settings


def env_for(settings: Settings, model_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RECD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RECD_REDIS_URL": settings.redis_url,
        "RECD_REDIS_PREFIX": settings.redis_prefix,
        "RECD_EVENTS_TOPIC": settings.events_topic,
        "RECD_PROFILES_TOPIC": settings.profiles_topic,
        "RECD_CONSUMER_GROUP": settings.consumer_group,
        "RECD_MODEL_DIR": str(model_dir),
        "RECD_METRICS_PORT": "0",
        "RECD_TRAIN_MIN_EVENTS": "10000",
        "RECD_TRAIN_INTERVAL_S": "100000",
        "RECD_LOG_LEVEL": "WARNING",
    }


def _queued(client: redis.Redis, keys: Keys) -> int:
    return sum(int(client.zcard(k)) for k in (keys.dirty, keys.swap_queue, keys.dirty_inflight))  # type: ignore[arg-type]


def wait(label: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(label)
        time.sleep(0.2)
    print(f"{label}: ok", flush=True)


class Tracer:
    """Send tracer events and watch the tracer users' lists change.

    Each poll also asks where the pending users are in the changed-users queue, so each latency splits
    into stages: ingest (send -> the user queued as changed), queue (-> claimed by a serve worker) and
    serve (-> list written). A stage shorter than the 3 ms poll can be missed; those events count in the
    latencies but not in the stages."""

    def __init__(self, client: redis.Redis, keys: Keys, users: list[str], items: int) -> None:
        self.client, self.keys, self.users, self.items = client, keys, users, items
        # pending user -> (send time, list before, stage -> first poll time the user was seen in it)
        self.pending: dict[str, tuple[float, bytes | None, dict[str, float]]] = {}
        self.latencies: list[float] = []
        self.sent_at: list[float] = []  # send time of each measured tracer event
        self.stages: list[tuple[float, float, float]] = []  # (ingest, queue, serve) seconds
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def event(self, n: int) -> tuple[str, dict[str, Any]]:
        """The n-th tracer event: users in turn, items spread over the catalogue."""
        user = self.users[n % len(self.users)]
        return user, {
            "event_id": uuid.uuid4().hex,
            "user_id": user,
            "item_id": f"i{(n * 7919) % self.items}",
            "type": "click",
            "ts": int(time.time() * 1000),
        }

    def sent(self, user: str, at: float) -> None:
        before: Any = self.client.get(self.keys.rec(user))
        with self.lock:
            self.pending[user] = (at, before, {})

    def poll(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                users = list(self.pending)
            if users:
                pipe = self.client.pipeline(transaction=False)
                pipe.zmscore(self.keys.dirty, users)
                pipe.zmscore(self.keys.dirty_inflight, users)
                pipe.mget([self.keys.rec(u) for u in users])
                queued, claimed, raw = pipe.execute()
                now = time.time()
                with self.lock:
                    for user, q, c, value in zip(users, queued, claimed, raw, strict=True):
                        self._observe(user, q is not None, c is not None, value, now)
            time.sleep(0.003)

    def _observe(self, user: str, queued: bool, claimed: bool, value: bytes | None, now: float) -> None:
        at, before, seen = self.pending[user]
        if queued or claimed:
            seen.setdefault("queued", now)
        if claimed:
            seen.setdefault("claimed", now)
        if value is None or value == before:
            return
        self.latencies.append(now - at)
        self.sent_at.append(at)
        if "claimed" in seen:
            self.stages.append((seen["queued"] - at, seen["claimed"] - seen["queued"], now - seen["claimed"]))
        del self.pending[user]

    def stage_summary(self) -> dict[str, Any]:
        """p50/p99 ms of each stage, over the events whose stages were all seen."""
        if not self.stages:
            return {}
        ms = np.asarray(self.stages) * 1000
        out: dict[str, Any] = {
            name: {f"p{q}_ms": round(float(np.percentile(ms[:, k], q)), 1) for q in (50, 99)}
            for k, name in enumerate(("ingest", "queue", "serve"))
        }
        return {**out, "events": len(ms)}


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


def main() -> None:
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
    args = ap.parse_args()
    loop_before = python_loop_seconds()
    tag = uuid.uuid4().hex[:8]
    folder = Path(f"var/bench-fresh-{tag}")
    folder.mkdir(parents=True, exist_ok=True)
    broker = None if "RECD_KAFKA_BOOTSTRAP" in os.environ else start_broker(folder)
    bootstrap: dict[str, Any] = {"kafka_bootstrap": broker.address} if broker else {}
    settings = load_settings(
        None,
        None,
        **bootstrap,
        redis_prefix=f"bench-fresh-{tag}:",
        events_topic=f"fresh-{tag}",
        profiles_topic=f"fresh-{tag}.profiles",
        consumer_group=f"fresh-{tag}",
    )
    try:
        result = run(settings, args, folder / "models", broker.proc.pid if broker else None)
    finally:
        if broker:
            broker.stop()
        drop_prefix(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        shutil.rmtree(folder, ignore_errors=True)  # the broker's log and the model snapshots
    print(json.dumps({**result, "python_loop_s": [loop_before, python_loop_seconds()]}))


def run(settings: Settings, args: argparse.Namespace, model_dir: Path, broker_pid: int | None) -> dict[str, Any]:
    client, keys = redis.Redis.from_url(settings.redis_url), Keys(settings.redis_prefix)
    ensure_topics(settings)
    now = int(time.time() * 1000)
    # warm-up events end a minute ago; the steady stream's event times run from now, 1 ms apart on average
    spec = SyntheticSpec(
        users=args.users, items=args.items, seed=1, start_ms=now - args.warmup_events * 5 - 60_000, step_ms=5
    )
    tracer_users = [f"tracer-{k}" for k in range(args.tracers)]
    publish_warmup(settings, spec, tracer_users, args.warmup_events, now)
    env = env_for(settings, model_dir)
    roles = ["ingest,serve"] if args.one_process else ["ingest"] + ["serve"] * args.serve_workers
    daemons = [subprocess.Popen([sys.executable, "-m", "daemon", "run", "--roles", r], env=env) for r in roles]
    try:
        wait("warm-up ingested", lambda: int(client.hget(keys.stats, "applied") or 0) >= args.warmup_events, 600)
        # the trainer runs apart (its own replica in production), once, before the measured phase
        subprocess.run([sys.executable, "-m", "daemon", "train"], env=env, check=True, stdout=subprocess.DEVNULL)
        wait(
            "first model served",
            lambda: (
                client.exists(keys.model_current)
                and client.exists(keys.rec(tracer_users[-1]))
                and _queued(client, keys) == 0
            ),
            600,
        )
        stream = encoded(
            SyntheticSpec(**{**spec.__dict__, "start_ms": now, "seed": 2, "step_ms": 1}),
            int(args.rate * (args.seconds + 1)),
        )
        tracer = Tracer(client, keys, tracer_users, args.items)
        meter = CpuMeter(process_ids(client, broker_pid, daemons, roles))
        before = command_usec(client)
        started, achieved, cores = measure(LoadProducer(settings, args.producer), stream, tracer, args, meter)
        commands = top_commands(before, command_usec(client), time.time() - started)
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(30)
    return {
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        **latency_summary(tracer, started),
        "cpu_cores": {**cores, "total": round(sum(cores.values()), 2)},
        "redis_commands": commands,
        "target_p99_ms": 1000,
    }


def publish_warmup(settings: Settings, spec: SyntheticSpec, tracer_users: list[str], events: int, now: int) -> None:
    """One event for each tracer user (so each has a list before the stream), then ``events`` synthetic ones."""
    producer = make_producer(settings)
    for user in tracer_users:
        event = {"event_id": f"w-{user}", "user_id": user, "item_id": "i1", "type": "click", "ts": now}
        producer.send(settings.events_topic, key=user.encode(), value=encode(event))
    producer.close()
    publish_synthetic(settings, spec, events)


def latency_summary(tracer: Tracer, started: float) -> dict[str, Any]:
    """The tracer events' latency percentiles, per-window p99s and stages; ``unchanged``: lists never rewritten."""
    lat = np.asarray(tracer.latencies) * 1000
    pct = {f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)} if len(lat) else {}
    return {
        "tracer_events": len(lat) + len(tracer.pending),
        "unchanged": len(tracer.pending),
        **pct,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "p99_ms_per_10s": per_window(tracer, started),
        "stages": tracer.stage_summary(),
    }


def command_usec(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Redis's own count of (calls, microseconds) per command so far (INFO commandstats); the commands a
    script runs are counted apart as well as inside its EVALSHA."""
    info: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()}


def top_commands(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], span_s: float, top: int = 8
) -> dict[str, dict[str, float]]:
    """The ``top`` commands by Redis time between two ``command_usec`` readings: calls/s, us per call
    and the share of a core they took (any client's, this bench's poller included)."""
    rows = []
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            rows.append((usec - u0, calls - c0, name))
    rows.sort(reverse=True)
    return {
        name: {
            "calls_per_s": round(calls / span_s),
            "us_per_call": round(usec / calls, 1),
            "cores": round(usec / span_s / 1e6, 3),
        }
        for usec, calls, name in rows[:top]
    }


class CpuMeter:
    """CPU cores each process of the run used while the steady stream ran (from /proc, so Linux only; a
    process that is gone or not on this machine is left out): where the machine's CPU went."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.at, self.used = 0.0, dict[str, float]()

    def start(self) -> None:
        self.at = time.monotonic()
        self.used = {n: t for n, pid in self.pids.items() if (t := process_cpu_seconds(pid)) is not None}

    def cores(self) -> dict[str, float]:
        span = time.monotonic() - self.at
        now = {n: process_cpu_seconds(self.pids[n]) for n in self.used}
        return {n: round((t - self.used[n]) / span, 2) for n, t in now.items() if t is not None}


def process_ids(
    client: redis.Redis, broker_pid: int | None, daemons: list[subprocess.Popen[bytes]], roles: list[str]
) -> dict[str, int]:
    """The processes to meter: the daemons by role, this bench (producer and poller), the broker it
    started and Redis when it runs here."""
    pids = {f"{role}-{k}": d.pid for k, (role, d) in enumerate(zip(roles, daemons, strict=True))}
    pids["bench"] = os.getpid()
    if broker_pid is not None:
        pids["broker"] = broker_pid
    info: Any = client.info("server")
    redis_pid = int(info.get("process_id", 0))
    cmdline = Path(f"/proc/{redis_pid}/cmdline")  # a remote Redis's pid may name some other process here
    if cmdline.exists() and b"redis" in cmdline.read_bytes():
        pids["redis"] = redis_pid
    return pids


def measure(
    producer: LoadProducer, stream: list[tuple[bytes, bytes]], tracer: Tracer, args: argparse.Namespace, meter: CpuMeter
) -> tuple[float, float, dict[str, float]]:
    """The measured phase: steady stream with tracer events, lists polled. Returns (start time, events/s,
    CPU cores per process while the stream ran)."""
    gc.freeze()  # the stream's ~10^6 objects stay out of collections: no GC pauses in the producer/poller
    time.sleep(3)
    poller = threading.Thread(target=tracer.poll, daemon=True)
    poller.start()
    started = time.time()
    meter.start()
    sent = steady(producer, stream, tracer, args.rate, args.seconds, args.tracer_gap_s)
    achieved = sent / (time.time() - started)
    cores = meter.cores()
    time.sleep(5)
    tracer.stop.set()
    poller.join()
    return started, achieved, cores


def per_window(tracer: Tracer, started: float, window_s: float = 10.0) -> list[float]:
    """p99 of the tracer events sent in each consecutive window: does latency drift as histories grow?"""
    lat, sent = np.asarray(tracer.latencies) * 1000, np.asarray(tracer.sent_at) - started
    bins = (sent // window_s).astype(np.int64) if len(sent) else np.zeros(0, np.int64)
    return [round(float(np.percentile(lat[bins == b], 99)), 1) for b in np.unique(bins[bins >= 0])]


if __name__ == "__main__":
    main()
