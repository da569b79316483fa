"""Redis state is derived from the topics: after Redis lost it, ``recd rebuild`` makes it again, equal to the
ground truth; into a new prefix it makes a copy beside the live one, which stays as it was."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bench.groundtruth import replay
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.runtime.app import build_ingest
from daemon.runtime.keys import glob_escape
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.profiles import finest_segment
from daemon.runtime.rebuild import rebuild
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from tests.kafkatools import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stream(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, str]]:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=120, items=90, clusters=3, seed=21, start_ms=now - 3_600_000, step_ms=2)
    profiles = list(synthetic_profiles(spec, now - 7_200_000))
    events = list(synthetic_events(spec, 6000))
    events += events[:400]  # replayed events: duplicates for ingest and rebuild alike
    produce_raw(settings, settings.profiles_topic, [(p["user_id"].encode(), encode(p)) for p in profiles])
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    segments = {p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in profiles}
    return events, segments


def _ingest(settings: Settings, count: int) -> None:
    worker = build_ingest(settings, Metrics(CollectorRegistry()))
    reader = StateReader(topology_of(settings), keys_of(settings))
    try:
        deadline = time.monotonic() + 90
        while sum(reader.totals()[k] for k in ("applied", "duplicates", "stale")) < count:
            assert time.monotonic() < deadline, "the daemon did not ingest the stream"
            worker.step()
    finally:
        worker.shutdown()


def _state(settings: Settings) -> tuple[dict[str, list[tuple[int, str]]], dict[str, float], int]:
    """Every user's history (second, item), merged popularity, events applied."""
    reader = StateReader(topology_of(settings), keys_of(settings), settings.segment_keys)
    users = sorted({u for u in _users(settings)})
    histories = {u: [(e.ts, item) for item, e in h] for u, h in reader.histories_by_item_id(users).items() if h}
    return histories, dict(reader.popularity()), reader.totals()["applied"]


def _users(settings: Settings) -> list[str]:
    keys = keys_of(settings)
    client = topology_of(settings).client
    return [keys.history_owner(k)[1] for k in client.scan_iter(match=keys.history_pattern(), count=1000)]


def _expected(events: list[dict[str, Any]], settings: Settings, segments: dict[str, str]) -> Any:
    return replay(events, settings.history_len, settings.event_weights, settings.rating_threshold, segments)


def test_rebuild_after_redis_lost_its_data_gives_the_ground_truth(settings: Settings) -> None:
    events, segments = _stream(settings)
    _ingest(settings, len(events))
    client = topology_of(settings).client
    for key in list(client.scan_iter(match=glob_escape(settings.redis_prefix) + "*", count=1000)):
        client.delete(key)  # Redis lost everything
    report = rebuild(settings)
    assert report["events_read"] == len(events)
    histories, popularity, applied = _state(settings)
    truth = _expected(events, settings, segments)
    assert applied == truth.applied
    assert histories == {u: [(sec, item) for sec, _, item in h] for u, h in truth.histories.items()}
    assert popularity == pytest.approx(dict(truth.popularity))
    reader = StateReader(topology_of(settings), keys_of(settings))
    for segment, scores in truth.segments.items():
        assert reader.segment_scores(segment) == pytest.approx(dict(scores))


def test_rebuild_into_a_new_prefix_copies_the_live_state_and_leaves_it_alone(settings: Settings) -> None:
    events, _ = _stream(settings)
    _ingest(settings, len(events))
    client = topology_of(settings).client
    client.set(keys_of(settings).model_current, b'{"version": "v1", "path": "/x", "published_at": 1}')
    before = _state(settings)
    fresh = settings.redis_prefix + "rebuilt:"
    try:
        report = rebuild(settings, prefix=fresh)
        assert report["prefix"] == fresh
        assert _state(settings.replace(redis_prefix=fresh)) == before
        assert _state(settings) == before
        assert client.get(keys_of(settings.replace(redis_prefix=fresh)).model_current) is not None
    finally:
        for key in list(client.scan_iter(match=glob_escape(fresh) + "*", count=1000)):
            client.delete(key)
