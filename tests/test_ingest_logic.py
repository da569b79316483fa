"""IngestWorker's ordering rules with in-memory stand-ins (no servers): commit only what
Redis holds, in order; dead letters acknowledged before their offsets; drain on shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from redis import exceptions as rex

from daemon.ingest.source import Message, Offsets, Record
from daemon.ingest.store import BatchResult, Prepared
from daemon.ingest.worker import IngestWorker
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import ingest_options
from daemon.runtime.redisconn import FatalRedisError
from daemon.runtime.settings import load_settings
from schemas.events import InteractionEvent, ProfileEvent

NOW = 1_800_000_000.0
TP = TopicPartition("recd.events", 0)


def msg(offset: int, good: bool = True) -> Message:
    doc = {"event_id": f"e{offset}", "user_id": "u", "item_id": "i", "type": "view", "ts": int(NOW * 1000)}
    return Message(TP.topic, 0, offset, int(NOW * 1000), json.dumps(doc).encode() if good else b"{oops")


class Source:
    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = batches
        self.commits: list[tuple[Offsets, bool]] = []

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        return {TP: list(self.batches.pop(0))} if self.batches else {}

    def commit(self, offsets: Offsets, wait: bool = True) -> None:
        self.commits.append((dict(offsets), wait))

    def lag(self) -> dict[TopicPartition, int]:
        return {}

    def close(self) -> None:
        pass


class Dead:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[int, str]] = []
        self.failures = failures

    def send(self, msg: Record, reason: str, detail: str) -> None:
        self.sent.append((msg.offset, reason))

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker away")

    def close(self) -> None:
        pass


class Store:
    def __init__(self, gate: threading.Event | None = None, failures: int = 0, error: Exception | None = None) -> None:
        self.gate = gate
        self.failures = failures
        self.error = error or rex.ConnectionError("redis away")  # by default one that heals: retried
        self.applied: list[int] = []

    def prepare(self, events: list[tuple[InteractionEvent, int]], now_ms: int) -> Prepared:
        """The stand-in keeps the batch's event ids, in order, where the real store keeps item ids."""
        return Prepared({}, [e.event_id for e, _ in events], 0, now_ms)

    def apply_prepared(self, prepared: Prepared) -> BatchResult:
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise self.error
        self.applied.extend(int(event_id[1:]) for event_id in prepared.items)
        return BatchResult(applied=len(prepared.items))

    def apply_profiles(self, profiles: list[tuple[ProfileEvent, int]]) -> BatchResult:
        return BatchResult()


def worker(source: Source, store: Store, dead: Dead) -> IngestWorker:
    settings = load_settings(environ={})
    factory: Callable[[Callable[[list[TopicPartition]], None]], Source] = lambda _revoked: source  # noqa: E731
    return IngestWorker(ingest_options(settings), factory, dead, store, Metrics(CollectorRegistry()), clock=lambda: NOW)


def test_nothing_is_committed_before_redis_holds_it() -> None:
    gate = threading.Event()
    source, store = Source([[msg(0), msg(1)], [msg(2)]]), Store(gate)
    w = worker(source, store, Dead())
    for _ in range(4):
        w.step()
    assert source.commits == []  # Redis has not answered
    gate.set()
    deadline = time.monotonic() + 5
    while not source.commits or source.commits[-1][0] != {TP: 3}:
        assert time.monotonic() < deadline
        w.step()
    assert store.applied == [0, 1, 2]
    w.shutdown()


def test_failed_writes_are_retried_in_order_then_committed() -> None:
    source, store = Source([[msg(0)], [msg(1)], [msg(2)]]), Store(failures=2)
    w = worker(source, store, Dead())
    deadline = time.monotonic() + 10
    while store.applied != [0, 1, 2]:
        assert time.monotonic() < deadline
        w.step()
    w.shutdown()
    assert source.commits[-1] == ({TP: 3}, True)  # shutdown commits synchronously
    committed = [c[0][TP] for c in source.commits]
    assert committed == sorted(committed)


def test_dead_letters_are_acknowledged_before_their_offsets_commit() -> None:
    source, store, dead = Source([[msg(0), msg(1, good=False), msg(2)]]), Store(), Dead(failures=1)
    w = worker(source, store, dead)
    w.step()
    w.shutdown()
    assert dead.sent == [(1, "invalid_json")]
    assert store.applied == [0, 2]
    assert source.commits[-1][0] == {TP: 3}


def test_shutdown_gives_up_on_a_dead_redis_without_committing() -> None:
    source, store = Source([[msg(0)]]), Store(failures=10**6)
    w = worker(source, store, Dead())
    w.step()
    w.shutdown(timeout_s=0.5)
    assert source.commits == []


WRONGTYPE = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


def test_a_fault_that_cannot_heal_stops_the_loop_unretried_and_uncommitted() -> None:
    source, store = Source([[msg(0)], [msg(1)]]), Store(failures=1, error=WRONGTYPE)
    w = worker(source, store, Dead())
    deadline = time.monotonic() + 5
    with pytest.raises(FatalRedisError, match="WRONGTYPE"):
        while time.monotonic() < deadline:
            w.step()
    assert w.metrics.registry.get_sample_value("recd_errors_total", {"component": "redis"}) is None  # not retried
    assert source.commits == []
    w.shutdown(timeout_s=1)


def test_after_a_fault_that_cannot_heal_shutdown_commits_nothing_past_the_failed_batch() -> None:
    gate = threading.Event()
    source, store = Source([[msg(0)], [msg(1)], [msg(2)]]), Store(gate, failures=1, error=WRONGTYPE)
    w = worker(source, store, Dead())
    for _ in range(3):  # batch 0 in Redis (held), batch 1 queued behind it, batch 2 polled and ready
        w.step()
    gate.set()
    deadline = time.monotonic() + 5
    with pytest.raises(FatalRedisError):
        while time.monotonic() < deadline:
            w.step()
    w.shutdown(timeout_s=2)  # what RoleLoop does after a role crashed
    assert source.commits == []  # offset 0 never reached Redis: nothing may be committed past it
