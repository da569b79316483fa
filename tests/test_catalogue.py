"""The item catalogue: its decoder, and ingest of the catalogue topic into Redis (real broker, real Redis
single and cluster): newest ts wins, replays change nothing, bad records are dead-lettered with a reason."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import CollectorRegistry

from daemon.ingest.worker import IngestWorker
from daemon.runtime.app import build_ingest
from daemon.runtime.catalogue import log_heads, read_catalogue, read_changes
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings
from schemas.catalogue import MAX_VALUES_PER_ITEM, CatalogueEvent, decode_catalogue, from_stored
from schemas.events import InvalidEvent, Limits
from tests.kafkatools import produce_raw, read_topic

NOW = int(time.time() * 1000)


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


BAD: list[tuple[str, bytes, str]] = [
    ("no item", raw({"attributes": {}, "ts": NOW}), "missing_field"),
    ("no attributes", raw({"item_id": "i1", "ts": NOW}), "missing_field"),
    ("attributes a list", raw({"item_id": "i1", "attributes": ["a"], "ts": NOW}), "wrong_type"),
    ("a number value", raw({"item_id": "i1", "attributes": {"year": 1999}, "ts": NOW}), "wrong_type"),
    ("a nested list", raw({"item_id": "i1", "attributes": {"g": [["a"]]}, "ts": NOW}), "wrong_type"),
    ("blank value", raw({"item_id": "i1", "attributes": {"g": " "}, "ts": NOW}), "empty_field"),
    ("long value", raw({"item_id": "i1", "attributes": {"g": "x" * 201}, "ts": NOW}), "field_too_long"),
    ("reserved name", raw({"item_id": "i1", "attributes": {"_ts": "1"}, "ts": NOW}), "reserved_name"),
    (
        "too many fields",
        raw({"item_id": "i1", "attributes": {f"f{k}": "v" for k in range(33)}, "ts": NOW}),
        "context_too_large",
    ),
    (
        "too many values",
        raw({"item_id": "i1", "attributes": {"tag": [f"t{k}" for k in range(33)]}, "ts": NOW}),
        "context_too_large",
    ),
    ("available a string", raw({"item_id": "i1", "attributes": {}, "available": "no", "ts": NOW}), "wrong_type"),
    ("no ts", raw({"item_id": "i1", "attributes": {}}), "missing_field"),
    ("not json", b"{item", "invalid_json"),
]


def test_decode_gives_one_canonical_form() -> None:
    doc = {"item_id": "i1", "attributes": {"tag": ["b", "a", "b"], "brand": " acme "}, "ts": "2026-01-02T00:00:00Z"}
    rec = decode_catalogue(raw(doc), Limits(), NOW)
    assert rec == CatalogueEvent("i1", {"brand": ("acme",), "tag": ("b", "a")}, True, 1767312000000)
    assert from_stored(rec.to_json()) == rec
    assert decode_catalogue(rec.to_json(), Limits(), NOW) == rec


def test_decode_refuses_bad_records_with_their_reason() -> None:
    for name, message, reason in BAD:
        with pytest.raises(InvalidEvent) as caught:
            decode_catalogue(message, Limits(), NOW)
        assert caught.value.reason == reason, name
    many = {f"f{k}": [f"v{j}" for j in range(5)] for k in range(MAX_VALUES_PER_ITEM // 5 + 1)}
    with pytest.raises(InvalidEvent, match="values >"):
        decode_catalogue(raw({"item_id": "i1", "attributes": many, "ts": NOW}), Limits(), NOW)


def record(item: str, ts: int, available: bool = True, **attributes: str) -> bytes:
    return raw({"item_id": item, "attributes": attributes, "available": available, "ts": ts})


def ingest_until(worker: IngestWorker, metrics: Metrics, records: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.step()
        done = sum(
            metrics.registry.get_sample_value("recd_catalogue_records_total", {"outcome": o}) or 0
            for o in ("applied", "unchanged")
        )
        if done >= records and worker.idle():
            return
    raise AssertionError(f"ingest did not reach {records} catalogue records in {timeout_s}s")


@pytest.mark.integration
def test_catalogue_topic_to_redis(settings: Settings, rclient: RedisClient) -> None:
    topology, keys = Topology(rclient, -1), keys_of(settings)
    good = [
        (b"i1", record("i1", NOW - 5000, genre="Comedy")),
        (b"i1", record("i1", NOW - 9000, genre="Old")),  # older: changes nothing
        (b"i2", record("i2", NOW - 5000, genre="Drama", brand="acme")),
        (b"i2", record("i2", NOW - 4000, False, genre="Drama", brand="acme")),  # sold out
        (b"i3", record("i3", NOW - 5000)),
    ]
    produce_raw(settings, settings.items_topic, good + [(b"i9", message) for _, message, _ in BAD])
    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    try:
        ingest_until(worker, metrics, len(good))
        produce_raw(settings, settings.items_topic, good)  # a replay
        ingest_until(worker, metrics, 2 * len(good))
    finally:
        worker.shutdown()
    got = read_catalogue(topology, keys)
    assert got.attributes == {"i1": {"genre": ("Comedy",)}, "i2": {"brand": ("acme",), "genre": ("Drama",)}, "i3": {}}
    assert got.unavailable == {"i2"}
    assert metrics.registry.get_sample_value("recd_catalogue_records_total", {"outcome": "applied"}) == 4
    assert_changes(topology, keys)
    dead = read_topic(settings, settings.items_topic + settings.dlq_suffix, len(BAD))
    reasons = sorted(dict(r.headers)["recd.reason"].decode() for r in dead)  # type: ignore[attr-defined]
    assert reasons == sorted(reason for _, _, reason in BAD)


def assert_changes(topology: Topology, keys: Keys) -> None:
    """Each applied record left one change entry: i1 new; i2 new, then unavailable; i3 new."""
    after = ["0-0"] * keys.shards
    changes = read_changes(topology, keys, after)
    assert sorted((c.item_id, c.change, c.available) for c in changes) == [
        ("i1", "new", True),
        ("i2", "new", True),
        ("i2", "update", False),
        ("i3", "new", True),
    ]
    assert read_changes(topology, keys, after) == []  # ``after`` moved past them
    assert after == log_heads(topology, keys)
