"""Interaction and profile events: the JSON contract on the Kafka topics.

One event per message, UTF-8 JSON, message key = user_id. ``decode_*`` turn raw
message bytes into frozen records or raise ``InvalidEvent`` with a machine
reason (the dead-letter label and metric label) and a precise detail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like", "dislike", "skip")

# Reasons an event is refused; each one is a label on recd_events_invalid_total.
REASONS = (
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "empty_field",
    "field_too_long",
    "unknown_type",
    "rating_without_value",
    "bad_value",
    "bad_timestamp",
    "context_too_large",
    "reserved_name",
)

MIN_TS_MS = 631_152_000_000  # 1990-01-01T00:00:00Z: earlier is not an epoch-ms time


@dataclass(frozen=True)
class Limits:
    """Bounds an event must respect; built from the daemon's settings."""

    max_bytes: int = 16_384
    max_id_len: int = 256
    max_context: int = 16
    max_context_len: int = 256
    max_attributes: int = 32
    min_ts_ms: int = MIN_TS_MS
    max_future_ms: int = 86_400_000  # how far past 'now' an event time may lie


class InvalidEvent(ValueError):
    """A message that is not a valid event; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str, field_name: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field_name


NO_CONTEXT: Mapping[str, str] = MappingProxyType({})


class InteractionEvent(NamedTuple):
    """A valid interaction (a NamedTuple: immutable and cheap to build on the hot path)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int  # epoch ms
    value: float | None = None
    context: Mapping[str, str] = NO_CONTEXT

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.value is not None:
            doc["value"] = self.value
        if self.context:
            doc["context"] = dict(self.context)
        return json.dumps(doc, separators=(",", ":")).encode()


class ProfileEvent(NamedTuple):
    user_id: str
    attributes: dict[str, str]
    ts: int  # epoch ms

    def to_json(self) -> bytes:
        doc = {"user_id": self.user_id, "attributes": self.attributes, "ts": self.ts}
        return json.dumps(doc, separators=(",", ":")).encode()


def _load_object(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > limit {limits.max_bytes}")
    try:  # fast path; on any complaint the standard library says precisely what is wrong
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = _load_slowly(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent("not_an_object", f"top level is {type(doc).__name__}, not an object")
    return doc


def _load_slowly(raw: bytes) -> Any:
    """Standard-library parse, for a precise reason (it also accepts NaN, refused later as bad_value)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_utf8", f"byte {exc.start}: {exc.reason}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"line {exc.lineno} col {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InvalidEvent("invalid_json", "nesting too deep") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300 by default)
        raise InvalidEvent("invalid_json", f"number out of range: {str(exc)[:80]}") from None
    bad = _lone_surrogate(doc)
    if bad is not None:
        raise InvalidEvent("invalid_utf8", f"string {bad[:40]!r} holds a lone surrogate escape: not Unicode text")
    return doc


def _lone_surrogate(doc: Any) -> str | None:
    """The first string (key or value) holding a lone UTF-16 surrogate, which a ``\\ud800`` escape
    decodes to and which has no UTF-8 form (no id, key or Redis command could carry it), else None."""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode()
            except UnicodeEncodeError:
                return node
    return None


def _id(doc: dict[str, Any], name: str, limits: Limits) -> str:
    if name not in doc:
        raise InvalidEvent("missing_field", f"'{name}' is required", name)
    val = doc[name]
    if not isinstance(val, str):
        raise InvalidEvent("wrong_type", f"'{name}' must be a string, got {_kind(val)}", name)
    if not val.strip():
        raise InvalidEvent("empty_field", f"'{name}' is empty", name)
    if len(val) > limits.max_id_len:
        raise InvalidEvent("field_too_long", f"'{name}' has {len(val)} chars > {limits.max_id_len}", name)
    return val


def _kind(val: object) -> str:
    return "null" if val is None else type(val).__name__


def parse_ts(val: object, limits: Limits, now_ms: int) -> int:
    """Epoch-ms int, or an RFC 3339 string with a zone, within sane bounds."""
    if isinstance(val, float) and abs(val) >= 2**63:  # an integer beyond 64 bits reads as a float: out of range
        raise InvalidEvent("bad_timestamp", f"'ts' {val!r} is out of range (epoch ms expected)", "ts")
    if isinstance(val, bool) or not isinstance(val, int | str):
        raise InvalidEvent("wrong_type", f"'ts' must be epoch-ms int or RFC 3339 string, got {_kind(val)}", "ts")
    if isinstance(val, str):
        try:
            parsed = datetime.fromisoformat(val.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidEvent("bad_timestamp", f"'ts' {val[:40]!r} is not RFC 3339", "ts") from None
        if parsed.tzinfo is None:
            raise InvalidEvent("bad_timestamp", f"'ts' {val[:40]!r} has no time zone", "ts")
        ts = int(parsed.timestamp() * 1000)
    else:
        ts = val
    if ts < limits.min_ts_ms:
        raise InvalidEvent("bad_timestamp", f"'ts' {ts} is before {limits.min_ts_ms} (epoch ms expected)", "ts")
    if ts > now_ms + limits.max_future_ms:
        raise InvalidEvent("bad_timestamp", f"'ts' {ts} is more than {limits.max_future_ms} ms in the future", "ts")
    return ts


def _value(doc: dict[str, Any], etype: str) -> float | None:
    val = doc.get("value")
    if val is None:
        if etype == "rating":
            raise InvalidEvent("rating_without_value", "a rating needs a numeric 'value'", "value")
        return None
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise InvalidEvent("wrong_type", f"'value' must be a number, got {_kind(val)}", "value")
    if abs(val) > 1e6 or not math.isfinite(val):  # in this order: a huge int has no float
        raise InvalidEvent("bad_value", f"'value' {val!r} is not a finite number within ±1e6", "value")
    return float(val)


def _str_map(doc: dict[str, Any], name: str, max_entries: int, max_len: int) -> dict[str, str]:
    val = doc.get(name)
    if val is None:
        return {}
    if not isinstance(val, dict):
        raise InvalidEvent("wrong_type", f"'{name}' must be an object of strings, got {_kind(val)}", name)
    if len(val) > max_entries:
        raise InvalidEvent("context_too_large", f"'{name}' has {len(val)} entries > {max_entries}", name)
    for key, item in val.items():
        if not isinstance(item, str):
            raise InvalidEvent("wrong_type", f"'{name}.{key}' must be a string, got {_kind(item)}", name)
        if len(key) > max_len or len(item) > max_len:
            raise InvalidEvent("context_too_large", f"'{name}.{key[:40]}' longer than {max_len} chars", name)
    return val


_TYPES = frozenset(EVENT_TYPES)


def _plain_event(doc: dict[str, Any], limits: Limits, now_ms: int) -> InteractionEvent | None:
    """The common case (ids, a non-rating type, epoch-ms ts, no value or context) checked in one go;
    None sends the document through the field-by-field checks that name the fault."""
    event_id, user_id, item_id = doc.get("event_id"), doc.get("user_id"), doc.get("item_id")
    etype, ts, n = doc.get("type"), doc.get("ts"), limits.max_id_len
    if (
        type(event_id) is str
        and type(user_id) is str
        and type(item_id) is str
        and type(ts) is int
        and type(etype) is str
        and etype in _TYPES
        and etype != "rating"
        and "value" not in doc
        and "context" not in doc
        and 0 < len(event_id) <= n
        and 0 < len(user_id) <= n
        and 0 < len(item_id) <= n
        and not (event_id.isspace() or user_id.isspace() or item_id.isspace())
        and limits.min_ts_ms <= ts <= now_ms + limits.max_future_ms
    ):
        return InteractionEvent(event_id, user_id, item_id, etype, ts)
    return None


def decode_interaction(raw: bytes, limits: Limits, now_ms: int) -> InteractionEvent:
    """Raw message bytes -> InteractionEvent, or InvalidEvent with the first fault found."""
    doc = _load_object(raw, limits)
    plain = _plain_event(doc, limits, now_ms)
    if plain is not None:
        return plain
    event_id = _id(doc, "event_id", limits)
    user_id = _id(doc, "user_id", limits)
    item_id = _id(doc, "item_id", limits)
    etype = doc.get("type")
    if etype is None:
        raise InvalidEvent("missing_field", "'type' is required", "type")
    if etype not in EVENT_TYPES:
        shown = etype[:40] if isinstance(etype, str) else _kind(etype)
        raise InvalidEvent("unknown_type", f"'type' {shown!r} is not one of {', '.join(EVENT_TYPES)}", "type")
    if "ts" not in doc:
        raise InvalidEvent("missing_field", "'ts' is required", "ts")
    ts = parse_ts(doc["ts"], limits, now_ms)
    value = _value(doc, etype)
    context = _str_map(doc, "context", limits.max_context, limits.max_context_len)
    return InteractionEvent(event_id, user_id, item_id, etype, ts, value, context or NO_CONTEXT)


def decode_profile(raw: bytes, limits: Limits, now_ms: int) -> ProfileEvent:
    """Raw message bytes -> ProfileEvent, or InvalidEvent."""
    doc = _load_object(raw, limits)
    user_id = _id(doc, "user_id", limits)
    if "attributes" not in doc:
        raise InvalidEvent("missing_field", "'attributes' is required", "attributes")
    if doc["attributes"] is None:  # required: null must not pass as an empty profile (that would wipe one)
        raise InvalidEvent("wrong_type", "'attributes' must be an object of strings, got null", "attributes")
    attributes = _str_map(doc, "attributes", limits.max_attributes, limits.max_context_len)
    reserved = [name for name in attributes if name.startswith("_")]
    if reserved:
        detail = f"attribute names starting with '_' are reserved: {reserved[0][:40]!r}"
        raise InvalidEvent("reserved_name", detail, "attributes")
    if "ts" not in doc:
        raise InvalidEvent("missing_field", "'ts' is required", "ts")
    return ProfileEvent(user_id, attributes, parse_ts(doc["ts"], limits, now_ms))
