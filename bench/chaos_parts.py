"""Parts of the chaos replay (bench/chaos.py): the stream with duplicates and reordered event times, the
processes it kills, restarts and pauses (the daemons, a Redis of its own with an append-only file, the
broker), and the check of Redis against the reference model (bench/groundtruth.py)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from bench.groundtruth import replay
from daemon.dev import embedded
from daemon.dev.embedded import EmbeddedError, free_port, redis_answers
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: where ``python -m daemon`` runs."""
DUPLICATE_DELAY = 20_000
"""A duplicate is sent at most this many messages after its original."""
PARTITIONS = 4
"""Partitions of the events topic (daemon.runtime.app.create_topics' default)."""


@dataclass(frozen=True)
class Stream:
    """The events in send order (each user's delivery order: messages are keyed by user), with how many
    are second copies and how many arrive after a newer event of the same user."""

    events: list[dict[str, Any]]
    duplicates: int
    out_of_order: int


def make_stream(spec: SyntheticSpec, n: int, rng: random.Random, duplicate_share: float, window: int) -> Stream:
    """``n`` synthetic events shuffled within consecutive windows of ``window``, then ``duplicate_share`` of
    them sent again up to DUPLICATE_DELAY messages later."""
    events = list(synthetic_events(spec, n))
    for start in range(0, n, max(1, window)):
        chunk = events[start : start + window]
        rng.shuffle(chunk)
        events[start : start + window] = chunk
    later: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    copies = rng.sample(range(n), int(n * duplicate_share))
    for i in copies:
        later[min(n - 1, i + rng.randint(1, DUPLICATE_DELAY))].append(events[i])
    out: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        out.append(event)
        out.extend(later.get(i, ()))
    return Stream(out, len(copies), out_of_order(out))


def out_of_order(events: Iterable[dict[str, Any]]) -> int:
    """Events that arrive after a newer one (by event time) of the same user."""
    newest: dict[str, int] = {}
    late = 0
    for event in events:
        if event["ts"] < newest.get(event["user_id"], -1):
            late += 1
        else:
            newest[event["user_id"]] = event["ts"]
    return late


class Sender:
    """librdkafka's idempotent producer: each message reaches its user's partition once, in send order,
    across a broker outage (it retries until the broker answers again)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self.failed = 0
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "partitioner": "murmur2_random",  # where kafka-python puts a key
                "queue.buffering.max.messages": 1_000_000,
                "message.timeout.ms": 600_000,
            }
        )

    def send(self, topic: str, docs: Iterable[dict[str, Any]]) -> None:
        """Queue each document keyed by its user_id (returns before they are delivered)."""
        for doc in docs:
            while True:
                try:
                    self.producer.produce(topic, value=encode(doc), key=doc["user_id"].encode(), on_delivery=self._sent)
                    break
                except BufferError:
                    self.producer.poll(0.01)
        self.producer.poll(0)

    def _sent(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def flush(self, timeout_s: float = 300.0) -> int:
        """Wait for every delivery; returns how many are still undelivered."""
        return int(self.producer.flush(timeout_s))


def daemon_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A daemon's environment for the bench: its settings (daemon.dev.embedded.daemon_env), no metrics port,
    warnings only."""
    return embedded.daemon_env(settings, **{"RECD_METRICS_PORT": "0", "RECD_LOG_LEVEL": "WARNING", **extra})


class Daemons:
    """One ``recd run --roles <role>`` process per role, started again after each kill; ``exits`` counts the
    ones found dead that nobody killed (a daemon should never exit by itself here)."""

    def __init__(self, env: dict[str, str], folder: Path, roles: Sequence[str] = ("ingest", "serve")) -> None:
        self.env, self.folder = env, folder
        self.kills: Counter[str] = Counter()
        self.exits: Counter[str] = Counter()
        self.procs = {role: self._spawn(role) for role in roles}

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{role}.log").open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--roles", role],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, role: str) -> None:
        """SIGKILL the role's process (when alive) and start it again."""
        proc = self.procs[role]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.kills[role] += 1
        else:
            self.exits[role] += 1
        proc.wait()
        self.procs[role] = self._spawn(role)

    def revive(self) -> None:
        """Start again every process that exited by itself."""
        for role, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.exits[role] += 1
                self.procs[role] = self._spawn(role)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.folder.glob("*.log")))


class AofRedis:
    """A redis-server of the bench's own with an append-only file in ``folder``. ``restart`` is SHUTDOWN
    (which writes the file out) and a start on the same port and folder: it comes back with its data."""

    def __init__(self, folder: Path, load_timeout_s: float = 300.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port, self.load_timeout_s = folder, free_port(), load_timeout_s
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedError("redis-server is not installed (Debian: `apt-get install redis-server`)")
        args = ["--bind", "127.0.0.1", "--port", str(self.port), "--appendonly", "yes", "--save", ""]
        args += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        proc = subprocess.Popen(
            [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + self.load_timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if redis_answers(self.url):  # a Redis still loading its file answers LOADING, not PONG
                return proc
            time.sleep(0.05)
        proc.kill()
        raise EmbeddedError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def dbsize(self) -> int:
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.dbsize())  # type: ignore[arg-type]
        finally:
            client.close()

    def restart(self) -> tuple[int, int, float]:
        """Writes paused, SHUTDOWN, then start again: (keys at the SHUTDOWN, keys as soon as it answers again
        (the daemons may have written by then), seconds it did not answer)."""
        started = time.monotonic()
        client = redis.Redis.from_url(self.url)
        try:
            client.client_pause(10_000, all=False)  # WRITE mode: no script lands between the count and the exit
            before = int(client.dbsize())  # type: ignore[arg-type]
            client.shutdown()
        finally:
            client.close()
        self.proc.wait(60)
        self.proc = self._start()
        return before, self.dbsize(), round(time.monotonic() - started, 2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def pause(pid: int, seconds: float) -> float:
    """Stop a process (SIGSTOP) for ``seconds``, then let it go on (SIGCONT); returns the seconds paused."""
    started = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return round(time.monotonic() - started, 2)


def committed_total(settings: Settings, partitions: int = PARTITIONS) -> int:
    """The consumer group's committed offsets of the events topic, summed (records consumed and committed)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(partitions)]
        return sum(consumer.committed(tp) or 0 for tp in tps)
    finally:
        consumer.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> float:
    """Poll ``check`` until true; returns the seconds it took, raises TimeoutError after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def handled(reader: StateReader) -> int:
    """Events ingest has answered for (applied, duplicate or stale), summed over every shard."""
    totals = reader.totals()
    return totals["applied"] + totals["duplicates"] + totals["stale"]


def verify(
    settings: Settings, reader: StateReader, profiles: list[dict[str, Any]], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Redis against the reference model of ``events`` in send order, as tests/test_crash.py checks it:
    histories (in order), popularity, segment counts and the applied total. ``lost``: records the model
    holds that Redis lacks (or applied events short of the model's count, whichever is more); ``doubled``:
    the other way round; ``redelivered``: events answered as duplicate or stale beyond the model's count
    (messages consumed again after a kill or an outage)."""
    segs = {p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in profiles}
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold, segs)
    users = sorted(expected.histories)
    got: dict[str, list[tuple[int, int, str]]] = {}
    for start in range(0, len(users), 5000):
        chunk = reader.histories_by_item_id(users[start : start + 5000])
        got.update({u: [(e.ts, e.crc, i) for i, e in h] for u, h in chunk.items()})
    missing = extra = 0
    for user, history in expected.histories.items():
        want, have = Counter(history), Counter(got.get(user, []))
        missing, extra = missing + (want - have).total(), extra + (have - want).total()
    totals = reader.totals()
    return {
        "lost": max(missing, expected.applied - totals["applied"]),
        "doubled": max(extra, totals["applied"] - expected.applied),
        "histories_match": got == expected.histories,
        "popularity_match": close(dict(reader.popularity()), expected.popularity),
        "segments_match": all(close(reader.segment_scores(s), dict(v)) for s, v in expected.segments.items()),
        "applied": totals["applied"],
        "expected_applied": expected.applied,
        "answered_as_duplicate_or_stale": totals["duplicates"] + totals["stale"],
        "redelivered": totals["duplicates"] + totals["stale"] - expected.duplicates - expected.stale,
        "users": len(users),
    }


def close(got: dict[str, float], want: dict[str, float], tolerance: float = 1e-6) -> bool:
    """The same keys, each value within ``tolerance`` (relative, at least absolute) of the wanted one."""
    return set(got) == set(want) and all(abs(got[k] - v) <= tolerance * max(1.0, abs(v)) for k, v in want.items())


def lists_check(
    client: RedisClient, rec_key: Callable[[str], str], users: Sequence[str], version: str
) -> dict[str, Any]:
    """Users without a ``rec:`` list made by model ``version``: none at all (``lists_missing``), or one made by
    another model (``lists_of_another_model``, by that model's version and the list's source)."""
    absent, other = 0, Counter[str]()
    for start in range(0, len(users), 5000):
        raws: Any = client.mget([rec_key(u) for u in users[start : start + 5000]])
        for raw in raws:
            if raw is None:
                absent += 1
                continue
            doc = orjson.loads(raw)
            if doc["model_version"] != version:
                other[f"{doc['model_version']} {doc['source'].split(':')[0]}"] += 1
    return {
        "users_without_list": absent + other.total(),
        "lists_missing": absent,
        "lists_of_another_model": other.total(),
        "lists_of_another_model_by_version": dict(other),
    }
