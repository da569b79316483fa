"""Malformed messages and the reason each must be refused with."""

from __future__ import annotations

import json
import time

NOW_MS = int(time.time() * 1000)  # the ingest loop judges times against the real clock


def event(**fields: object) -> bytes:
    doc: dict[str, object] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW_MS}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not DROP}).encode()


class _Drop:
    pass


DROP = _Drop()

BAD_EVENTS: list[tuple[str, bytes, str]] = [
    ("truncated json", event()[:-7], "invalid_json"),
    ("empty message", b"", "invalid_json"),
    ("not json", b"hello world", "invalid_json"),
    ("invalid utf-8", b'{"event_id": "\xff\xfe", "user_id": "u"}', "invalid_utf8"),
    ("a list", b"[1, 2, 3]", "not_an_object"),
    ("a string", b'"view"', "not_an_object"),
    ("no event_id", event(event_id=DROP), "missing_field"),
    ("no user_id", event(user_id=DROP), "missing_field"),
    ("no item_id", event(item_id=DROP), "missing_field"),
    ("no type", event(type=DROP), "missing_field"),
    ("no ts", event(ts=DROP), "missing_field"),
    ("numeric user_id", event(user_id=42), "wrong_type"),
    ("null item_id", event(item_id=None), "wrong_type"),
    ("blank user_id", event(user_id="  "), "empty_field"),
    ("huge item_id", event(item_id="x" * 300), "field_too_long"),
    ("unknown type", event(type="teleport"), "unknown_type"),
    ("type not a string", event(type=3), "unknown_type"),
    ("rating without value", event(type="rating"), "rating_without_value"),
    ("value is text", event(type="rating", value="5"), "wrong_type"),
    (
        "value is NaN",
        b'{"event_id":"e","user_id":"u","item_id":"i","type":"rating","ts":1750000000000,"value":NaN}',
        "bad_value",
    ),
    ("value is huge", event(type="rating", value=1e9), "bad_value"),
    ("ts in seconds", event(ts=NOW_MS // 1000), "bad_timestamp"),
    ("ts far future", event(ts=NOW_MS + 10 * 86_400_000), "bad_timestamp"),
    ("ts negative", event(ts=-5), "bad_timestamp"),
    ("ts bad string", event(ts="yesterday"), "bad_timestamp"),
    ("ts without zone", event(ts="2025-06-15T10:00:00"), "bad_timestamp"),
    ("ts is a float", event(ts=NOW_MS * 1.0), "wrong_type"),
    ("ts is a bool", event(ts=True), "wrong_type"),
    ("context not an object", event(context=["a"]), "wrong_type"),
    ("context value not a string", event(context={"page": 3}), "wrong_type"),
    ("context too large", event(context={f"k{i}": "v" for i in range(40)}), "context_too_large"),
    ("oversized", event(context={"blob": "x" * 200}) + b" " * 20_000, "oversized"),
]

BAD_PROFILES: list[tuple[str, bytes, str]] = [
    ("no attributes", json.dumps({"user_id": "u1", "ts": NOW_MS}).encode(), "missing_field"),
    ("attributes a list", json.dumps({"user_id": "u1", "attributes": [], "ts": NOW_MS}).encode(), "wrong_type"),
    (
        "reserved name",
        json.dumps({"user_id": "u1", "attributes": {"_seg": "x"}, "ts": NOW_MS}).encode(),
        "reserved_name",
    ),
    ("no ts", json.dumps({"user_id": "u1", "attributes": {}}).encode(), "missing_field"),
]
