"""Ingest against the real broker and Redis: effects, dead letters, commits, metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bench.groundtruth import Expected, replay
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.ingest.worker import IngestWorker
from daemon.runtime.app import build_ingest
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from tests.corpus import BAD_EVENTS, BAD_PROFILES
from tests.kafkatools import committed_total, produce_raw, read_topic

pytestmark = pytest.mark.integration

Event = dict[str, Any]


def reader_of(settings: Settings, rclient: RedisClient) -> StateReader:
    return StateReader(Topology(rclient, -1), keys_of(settings), settings.segment_keys)


def run_until(worker: IngestWorker, reader: StateReader, applied: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.step()
        totals = reader.totals()  # summed over every shard
        if totals["applied"] + totals["duplicates"] + totals["stale"] >= applied:
            return
    raise AssertionError(f"ingest did not reach {applied} events in {timeout_s}s: {totals}")


def produce_with_bad_input(settings: Settings, good: list[Event], profiles: list[Event]) -> int:
    """The events with bad messages interleaved (same keys), the profiles followed by bad ones; returns how many
    messages the events topic got."""
    stream: list[tuple[bytes, bytes]] = []
    for k, ev in enumerate(good):
        stream.append((ev["user_id"].encode(), encode(ev)))
        if k % 15 == 0 and k // 15 < len(BAD_EVENTS):
            stream.append((ev["user_id"].encode(), BAD_EVENTS[k // 15][1]))
    produce_raw(
        settings,
        settings.profiles_topic,
        [(p["user_id"].encode(), encode(p)) for p in profiles] + [(b"u1", b[1]) for b in BAD_PROFILES],
    )
    return produce_raw(settings, settings.events_topic, stream)


def assert_state(reader: StateReader, expected: Expected) -> None:
    """Histories, popularity and segment popularity (each summed over shards) are the ground truth's."""
    got = reader.histories_by_item_id(sorted(expected.histories))
    assert {u: [(e.ts, e.crc, i) for i, e in h] for u, h in got.items()} == expected.histories
    assert dict(reader.popularity()) == pytest.approx(dict(expected.popularity))
    assert reader.segment_names() == set(expected.segments)
    for seg, items in expected.segments.items():
        assert reader.segment_scores(seg) == pytest.approx(dict(items))


def assert_dead_letters(settings: Settings) -> None:
    dead = read_topic(settings, settings.dlq_topic, len(BAD_EVENTS))
    assert len(dead) == len(BAD_EVENTS)
    by_value = {bytes(r.value or b""): dict(r.headers) for r in dead}  # type: ignore[attr-defined]
    for name, raw, reason in BAD_EVENTS:
        headers = by_value[raw]
        assert headers["recd.reason"] == reason.encode(), name
        assert headers["recd.source.topic"] == settings.events_topic.encode()
        assert int(headers["recd.source.offset"]) >= 0 and headers["recd.detail"]
    dead_profiles = read_topic(settings, settings.profiles_topic + settings.dlq_suffix, len(BAD_PROFILES))
    assert sorted(dict(r.headers)["recd.reason"].decode() for r in dead_profiles) == sorted(  # type: ignore[attr-defined]
        b[2] for b in BAD_PROFILES
    )


def assert_metrics(metrics: Metrics, settings: Settings, good: list[Event], expected: Expected) -> None:
    for reason in {b[2] for b in BAD_EVENTS}:
        count = sum(1 for b in BAD_EVENTS if b[2] == reason) + sum(1 for b in BAD_PROFILES if b[2] == reason)
        assert metrics.registry.get_sample_value("recd_events_invalid_total", {"reason": reason}) == count
    views = sum(1 for e in good if e["type"] == "view")
    assert metrics.registry.get_sample_value("recd_events_total", {"type": "view"}) == views
    assert metrics.registry.get_sample_value("recd_events_applied_total") == expected.applied
    for partition in range(4):  # lag from the high watermark, per partition, caught up
        lag = metrics.registry.get_sample_value(
            "recd_consumer_lag", {"topic": settings.events_topic, "partition": str(partition)}
        )
        assert lag == 0


def test_events_bad_input_and_profiles(settings: Settings, rclient: RedisClient) -> None:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=50, items=40, seed=3, start_ms=now - 3_600_000, step_ms=20)
    good = list(synthetic_events(spec, 600))
    profiles = list(synthetic_profiles(spec, now - 7_200_000))
    sent = produce_with_bad_input(settings, good, profiles)

    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    reader = reader_of(settings, rclient)
    try:
        run_until(worker, reader, len(good))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            worker.step()  # let the last commit and a lag report happen
    finally:
        worker.shutdown()

    segs = {p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in profiles}
    expected = replay(good, settings.history_len, settings.event_weights, settings.rating_threshold, segs)
    assert_state(reader, expected)
    assert_dead_letters(settings)
    assert_metrics(metrics, settings, good, expected)
    assert committed_total(settings, settings.events_topic) == sent


def test_restart_resumes_from_commit_without_double_counting(settings: Settings, rclient: RedisClient) -> None:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=20, items=15, seed=5, start_ms=now - 60_000, step_ms=5)
    events = list(synthetic_events(spec, 300))
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events[:150]])
    reader = reader_of(settings, rclient)
    worker = build_ingest(settings, Metrics(CollectorRegistry()))
    run_until(worker, reader, 150)
    worker.shutdown()
    # the same events again (a producer retry) and the rest
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    worker = build_ingest(settings, Metrics(CollectorRegistry()))
    run_until(worker, reader, 450)
    worker.shutdown()
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold)
    assert dict(reader.popularity()) == pytest.approx(dict(expected.popularity))
    assert reader.totals()["applied"] == expected.applied
    assert json.loads("[]") == []
