"""Outages: Redis goes away mid-stream (ingest retries, commits nothing, resumes with
nothing lost or doubled; the serve role retries and serves again once it is back); the
broker goes away (the loop survives, readiness says so).

The Redis outages stop and restart one redis-server process of their own, so they run on the single Redis
only; tests/test_cluster_faults.py fails over and reshards the Redis Cluster."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from bench.groundtruth import replay
from daemon.dev.embedded import free_port, redis_answers, start_broker
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.runtime.app import App, broker_check, build_ingest, build_server, build_watcher
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import REDIS_OUTAGE, Topology
from daemon.runtime.service import RoleLoop
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from tests.kafkatools import committed_total, produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def persistent_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers(f"redis://127.0.0.1:{port}/0"):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc


def reader_at(url: str, keys: Keys) -> StateReader:
    return StateReader(Topology(redis.Redis.from_url(url), -1), keys)


@pytest.mark.single_redis
def test_redis_outage_retries_without_commit_then_resumes(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    server = persistent_redis(tmp_path, port)
    url = f"redis://127.0.0.1:{port}/0"
    settings = settings.replace(redis_url=url, poll_max_records=200)
    now = int(time.time() * 1000)
    events = list(synthetic_events(SyntheticSpec(users=40, items=30, seed=9, start_ms=now - 60_000), 3000))
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events[:1000]])
    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    reader = reader_at(url, keys_of(settings))
    try:
        while reader.totals()["applied"] < 1000:  # summed over every shard
            worker.step()
        for _ in range(5):
            worker.step()
        server.terminate()
        server.wait(10)
        produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events[1000:]])
        before = committed_total(settings, settings.events_topic)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # Redis is down: the loop keeps going
            worker.step()
        assert metrics.registry.get_sample_value("recd_errors_total", {"component": "redis"}) >= 1
        assert committed_total(settings, settings.events_topic) == before
        server = persistent_redis(tmp_path, port)  # back, with its data (append-only file)
        deadline = time.monotonic() + 60
        while committed_total(settings, settings.events_topic) < len(events):
            assert time.monotonic() < deadline, "ingest did not resume"
            worker.step()
    finally:
        worker.shutdown()
        server.terminate()
        server.wait(10)
    assert_restarted_state_is_ground_truth(settings, events, tmp_path, port)


def assert_restarted_state_is_ground_truth(
    settings: Settings, events: list[dict[str, Any]], folder: Path, port: int
) -> None:
    """Started again from its append-only file, Redis holds the ground truth: nothing lost or doubled."""
    server = persistent_redis(folder, port)
    try:
        expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold)
        reader = reader_at(settings.redis_url, keys_of(settings))
        got = reader.histories_by_item_id(sorted(expected.histories))
        assert {u: [(e.ts, e.crc, i) for i, e in h] for u, h in got.items()} == expected.histories
        assert reader.totals()["applied"] == expected.applied  # summed over every shard
    finally:
        server.terminate()
        server.wait(10)


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.single_redis
def test_the_serve_role_rides_out_a_redis_restart(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    server = persistent_redis(tmp_path, port)
    settings = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
    client, keys = redis.Redis.from_url(settings.redis_url), keys_of(settings)
    metrics = Metrics(CollectorRegistry())
    serve = build_server(settings, metrics, build_watcher(settings, metrics))
    loop = RoleLoop("serve", serve, 0.02, REDIS_OUTAGE, lambda _: metrics.errors.labels("serve").inc())
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        client.zadd(keys.dirty(keys.shard_of("before")), {"before": time.time() * 1000})
        _wait(lambda: bool(client.exists(keys.rec("before"))), 15, "no list before the outage")
        server.terminate()
        server.wait(10)
        _wait(
            lambda: (metrics.registry.get_sample_value("recd_errors_total", {"component": "serve"}) or 0) >= 2,
            15,
            "the serve role did not retry",
        )
        assert thread.is_alive() and loop.error is None
        server = persistent_redis(tmp_path, port)  # back, with its data (append-only file)
        client.zadd(keys.dirty(keys.shard_of("after")), {"after": time.time() * 1000})
        _wait(lambda: bool(client.exists(keys.rec("after"))), 20, "the serve role did not resume")
    finally:
        stop.set()
        thread.join(30)
        server.terminate()
        server.wait(10)
    assert loop.error is None and not thread.is_alive()


def test_broker_outage_keeps_the_loop_alive_and_not_ready(settings: Settings, tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    settings = settings.replace(kafka_bootstrap=broker.address)
    now = int(time.time() * 1000)
    events = list(synthetic_events(SyntheticSpec(users=10, items=10, seed=4, start_ms=now - 60_000), 100))
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    app = App.create(settings)
    worker = build_ingest(settings, app.metrics)
    try:
        deadline = time.monotonic() + 30
        while (app.metrics.registry.get_sample_value("recd_events_applied_total") or 0) < len(events):
            assert time.monotonic() < deadline
            worker.step()
        assert broker_check(settings)[0] is True
        broker.stop()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            worker.step()  # must not raise
        ok, detail = broker_check(settings)
        assert not ok and "no broker reachable" in detail
        status, body = app.routes.health(app.routes.ready)
        assert status == 503 and body["checks"]["kafka"]["ok"] is False
    finally:
        worker.shutdown(timeout_s=2)
        broker.stop()
