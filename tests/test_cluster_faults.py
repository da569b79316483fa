"""Faults of a Redis Cluster under a running ingest role, on the real cluster and broker.

A primary is SIGKILLed mid-stream (its replica takes over; the writes recd waited for are on it), and slots move
between primaries mid-stream (MOVED, ASK, TRYAGAIN): ingest retries, counts the retries, and ends equal to the
ground truth (bench/groundtruth.py) - nothing lost, nothing doubled. A fault that cannot heal (a key of the wrong
type, keys of one call in two slots) stops the role with an error that names it, its batch uncommitted.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from bench.groundtruth import replay
from daemon.dev.cluster import LocalCluster
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.ingest.worker import IngestWorker
from daemon.runtime.app import build_ingest
from daemon.runtime.keys import Keys, glob_escape
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import FatalRedisError, RedisClient, Topology
from daemon.runtime.service import Service
from daemon.runtime.settings import Settings, env_name
from daemon.runtime.state import StateReader
from tests.conftest import RedisTarget, make_settings
from tests.kafkatools import committed_total, produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Event = dict[str, Any]


@pytest.fixture
def cluster_settings(redis_cluster: LocalCluster, broker: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings like conftest's ``settings`` on the Redis Cluster (whole again first); the prefix is emptied after."""
    redis_cluster.wait_ready(60)
    tag = uuid.uuid4().hex[:8]
    yield make_settings(RedisTarget(redis_cluster.url, True), broker, f"test:{tag}:", tmp_path)
    redis_cluster.wait_ready(60)
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        found = list(client.scan_iter(match=glob_escape(f"test:{tag}:") + "*", count=1000))
        for start in range(0, len(found), 500):
            client.delete(*found[start : start + 500])
    finally:
        client.close()


class Running:
    """An ingest worker stepped in a thread of its own (as ``Service`` would) until the block ends."""

    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-ingest")

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.worker.step()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.worker.shutdown(timeout_s=10)

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Seconds until ``condition()``; fails on a timeout or when the role stopped with an error."""
        start = time.monotonic()
        while not condition():
            assert self.error is None, f"ingest stopped while waiting for {what}: {self.error!r}"
            assert time.monotonic() - start < timeout_s, f"timed out after {timeout_s:.0f}s waiting for {what}"
            time.sleep(0.1)
        return time.monotonic() - start


def events_of(seed: int, n: int, users: int = 300) -> list[Event]:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=users, items=200, seed=seed, start_ms=now - 3_600_000, step_ms=20)
    return list(synthetic_events(spec, n))


def produce(settings: Settings, events: list[Event]) -> None:
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def handled(metrics: Metrics) -> float:
    """Events the role has answered for (applied, duplicates, stale)."""
    names = ("recd_events_applied_total", "recd_events_duplicate_total", "recd_events_stale_total")
    return sum(sample(metrics, name) for name in names)


def assert_ground_truth(settings: Settings, events: list[Event]) -> None:
    """Every user's history, the popularity merged over shards and the totals are the ground truth's."""
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold)
    client = redis.RedisCluster.from_url(settings.redis_url)
    try:
        keys = keys_of(settings)
        reader = StateReader(Topology(client, -1), keys)
        got = reader.histories_by_item_id(sorted(expected.histories))
        assert {u: [(e.ts, e.crc, i) for i, e in h] for u, h in got.items()} == expected.histories
        assert len(list(client.scan_iter(match=keys.history_pattern(), count=1000))) == len(expected.histories)
        assert dict(reader.popularity()) == pytest.approx(dict(expected.popularity))  # nothing doubled
        totals = reader.totals()
        assert totals["applied"] == expected.applied
        assert totals["duplicates"] + totals["stale"] >= expected.duplicates + expected.stale  # replays add
    finally:
        client.close()


def primary_of(cluster: LocalCluster, key: str) -> int:
    """The port of the primary that serves ``key``'s slot now."""
    slot = key_slot(key.encode())
    return next(port for port in cluster.primary_ports() if slot in own_slots(cluster, port))


def own_slots(cluster: LocalCluster, port: int) -> list[int]:
    """The slots the primary on ``port`` serves, ascending, from its own CLUSTER NODES line."""
    nodes: Any = cluster.client(port).cluster("NODES")
    mine = next(node for node in nodes.values() if "myself" in node["flags"])
    return sorted(slot for bounds in mine["slots"] for slot in range(int(bounds[0]), int(bounds[-1]) + 1))


def failed_over(cluster: LocalCluster, victim: int) -> bool:
    try:
        primaries = cluster.primary_ports()
    except Exception:  # no node answered this time
        return False
    return victim not in primaries and len(primaries) == cluster.primaries


def test_a_primary_killed_mid_stream_fails_over_losing_and_doubling_nothing(
    redis_cluster: LocalCluster, cluster_settings: Settings
) -> None:
    settings = cluster_settings.replace(redis_wait_replicas=1, poll_max_records=500)
    events = events_of(seed=21, n=12_000)
    metrics = Metrics(CollectorRegistry())
    victim = primary_of(redis_cluster, keys_of(settings).items)  # every batch numbers its items there first
    produce(settings, events[:4000])
    started = time.monotonic()
    try:
        with Running(build_ingest(settings, metrics)) as running:
            running.wait(lambda: handled(metrics) >= 500, 60, "ingest under way")
            redis_cluster.kill(victim)
            produce(settings, events[4000:8000])  # events keep coming while the replica takes over
            took = running.wait(lambda: failed_over(redis_cluster, victim), 30, "the replica to take over")
            running.wait(lambda: sample(metrics, "recd_errors_total", component="redis") >= 1, 60, "a retry")
            redis_cluster.restart(victim)  # rejoins as a replica: WAIT 1 is met again
            redis_cluster.wait_ready(60)
            produce(settings, events[8000:])
            topic = settings.events_topic
            running.wait(lambda: committed_total(settings, topic) == len(events), 90, "every offset committed")
    finally:
        if not redis_cluster.nodes[victim].alive():
            redis_cluster.restart(victim)
        redis_cluster.wait_ready(60)
    print(f"failover: replica took over in {took:.1f}s; test {time.monotonic() - started:.1f}s")
    assert sample(metrics, "recd_errors_total", component="redis") >= 1  # transient: retried and counted
    assert_ground_truth(settings, events)


def wait_agreed(cluster: LocalCluster, timeout_s: float = 60) -> None:
    """Until ``redis-cli --cluster check`` finds every node agreeing (a resharding refuses to start before)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seed = f"127.0.0.1:{cluster.primary_ports()[0]}"
        done = subprocess.run(["redis-cli", "--cluster", "check", seed], capture_output=True, text=True, check=False)
        if done.returncode == 0 and "[ERR]" not in done.stdout:
            return
        assert time.monotonic() < deadline, done.stdout[-2000:]
        time.sleep(0.5)


def reshard_plan(cluster: LocalCluster, keys: Keys, slots: int) -> tuple[int, int, set[int]]:
    """(source port, target port, the slots of ours that move): the primary whose first ``slots`` slots (the ones
    redis-cli takes) hold most of our shards and the item dictionary gives them to the next primary."""
    ours = {key_slot(keys.stats(shard).encode()) for shard in range(keys.shards)} | {key_slot(keys.items.encode())}
    ports = cluster.primary_ports()
    moving = {port: ours & set(own_slots(cluster, port)[:slots]) for port in ports}
    source = max(ports, key=lambda port: len(moving[port]))
    return source, ports[(ports.index(source) + 1) % len(ports)], moving[source]


def test_slots_moved_mid_stream_lose_and_double_nothing(
    redis_cluster: LocalCluster, cluster_settings: Settings, tmp_path: Path
) -> None:
    settings = cluster_settings.replace(poll_max_records=500)
    events = events_of(seed=22, n=16_000)
    metrics = Metrics(CollectorRegistry())
    wait_agreed(redis_cluster)
    source, target, moving = reshard_plan(redis_cluster, keys_of(settings), 2000)
    assert moving, "no slot of the test's shards would move"
    ids = [redis_cluster.client(p).execute_command("CLUSTER MYID").decode() for p in (source, target)]
    command = ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from", ids[0]]
    command += ["--cluster-to", ids[1], "--cluster-slots", "2000", "--cluster-yes"]
    log = tmp_path / "reshard.log"
    produce(settings, events[:4000])
    started = time.monotonic()
    with Running(build_ingest(settings, metrics)) as running, log.open("w") as out:
        running.wait(lambda: handled(metrics) >= 500, 60, "ingest under way")
        reshard, moving_since = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT), time.monotonic()
        sent = 4000
        while reshard.poll() is None and sent < len(events) - 2000:  # events keep coming while slots move
            produce(settings, events[sent : sent + 1000])
            sent += 1000
        assert reshard.wait(120) == 0, log.read_text()[-3000:]
        moved_s = time.monotonic() - moving_since
        produce(settings, events[sent:])  # and after: their first write to a moved shard is MOVED
        topic = settings.events_topic
        running.wait(lambda: committed_total(settings, topic) == len(events), 90, "every offset committed")
    print(f"resharding: {sent - 4000} events sent while 2000 slots moved ({moved_s:.1f}s); test ", end="")
    print(f"{time.monotonic() - started:.1f}s; {sample(metrics, 'recd_errors_total', component='redis'):.0f} retries")
    assert moving <= set(own_slots(redis_cluster, target))  # the shards moved while ingest ran
    assert sample(metrics, "recd_errors_total", component="redis") >= 1  # MOVED (at least): retried and counted
    assert_ground_truth(settings, events)


# ----- faults that cannot heal: the role stops, names the fault, commits nothing of the batch

SPAWN_SETTINGS = ("kafka_bootstrap", "redis_url", "redis_cluster", "redis_shards", "redis_prefix", "consumer_group")


def spawn_ingest(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``python -m daemon ingest`` with these settings (their Redis, single or cluster), logging to ``log``."""
    env = dict(os.environ)
    for name in (*SPAWN_SETTINGS, "events_topic", "profiles_topic", "items_topic"):
        env[env_name(name)] = str(getattr(settings, name))
    env.update({"RECD_SESSION_TIMEOUT_MS": "6000", "RECD_METRICS_PORT": "0", "RECD_POLL_MAX_RECORDS": "500"})
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "daemon", "ingest"], env=env, stdout=out, stderr=out)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_key_of_the_wrong_type_stops_the_ingest_process_uncommitted(
    settings: Settings, rclient: RedisClient, tmp_path: Path
) -> None:
    """On the single Redis and on the cluster: one code path."""
    keys, poisoned, log = keys_of(settings), 5, tmp_path / "ingest.log"
    events = events_of(seed=23, n=3000, users=200)
    good = [e for e in events if keys.shard_of(e["user_id"]) != poisoned]
    bad = [e for e in events if keys.shard_of(e["user_id"]) == poisoned]
    assert bad and any(e["type"] == "view" for e in bad)  # positives: the script adds to the poisoned key
    produce(settings, good)
    proc = spawn_ingest(settings, log)
    try:
        topic = settings.events_topic
        wait_for(lambda: committed_total(settings, topic) == len(good) or proc.poll() is not None, 90, "the others")
        assert proc.poll() is None, log.read_text()[-3000:]
        rclient.set(keys.popularity(poisoned), "x")  # the shard's popularity is no sorted set any more
        produce(settings, bad)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ingest kept going after WRONGTYPE: {log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "FatalRedisError" in text and "WRONGTYPE" in text, text[-3000:]
    assert "redis write failed" not in text, text[-3000:]  # stopped at once, not retried
    assert committed_total(settings, settings.events_topic) == len(good)  # the failed batches' offsets are not


@contextlib.contextmanager
def gc_restored() -> Iterator[None]:
    """``Service.run`` freezes what is alive and raises the collector's threshold, for a daemon's life: undone."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_keys_of_one_call_in_two_slots_stop_the_role_with_crossslot(
    cluster_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, keys = cluster_settings, keys_of(cluster_settings)
    # A shard's segment-name set built with the next shard's tag: the shard's script names keys of two slots.
    monkeypatch.setattr(Keys, "segments", lambda self, shard: f"{self.prefix}s{{{(shard + 1) % self.shards}}}:segs")
    produce(settings, events_of(seed=24, n=1000, users=100))
    metrics, service = Metrics(CollectorRegistry()), Service()
    service.add("ingest", build_ingest(settings, metrics))
    deadline = time.monotonic() + 60
    with gc_restored():
        code = service.run(until=lambda: time.monotonic() > deadline)
    error = service.loops[0].error
    assert code == 1 and isinstance(error, FatalRedisError), error
    assert sample(metrics, "recd_errors_total", component="redis") == 0  # stopped at once, not retried
    assert committed_total(settings, settings.events_topic) == 0
    client = redis.RedisCluster.from_url(settings.redis_url)
    try:
        assert StateReader(Topology(client, -1), keys).totals()["applied"] == 0  # no script ran
    finally:
        client.close()
    assert "don't hash to the same slot" in str(error), error
    assert "CROSSSLOT" in str(error), error  # named, though redis-py drops the code from the error's text
