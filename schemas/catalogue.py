"""Item catalogue events: the JSON contract on the items topic (``RECD_ITEMS_TOPIC``, key = item_id).

``{"item_id": str, "attributes": {field: str | [str]}, "available": bool (default true), "ts": ...}``

Attributes describe an item (genres, brand, tags, price band, year...); a field holds one value or a list of
them. The newest ``ts`` wins per item; a replay (same ts) changes nothing. ``available: false`` takes an item
out of every list; a later record with ``available: true`` brings it back. The bounds below are the
catalogue's, and trainer/attributes.py keeps the same ones for attributes read from dataset files.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from schemas.events import InvalidEvent, Limits, _id, _kind, _load_object, parse_ts

MAX_FIELDS = 32
"""Most attribute fields per item."""
MAX_VALUES_PER_FIELD = 32
"""Most values of one field of one item (a multi-valued field: genres, tags, actors)."""
MAX_VALUES_PER_ITEM = 64
"""Most (field, value) pairs per item."""
MAX_NAME_CHARS = 200
"""Longest field name or value."""


class CatalogueEvent(NamedTuple):
    """A valid catalogue record: attribute values as tuples, fields sorted (one canonical form per content)."""

    item_id: str
    attributes: dict[str, tuple[str, ...]]
    available: bool
    ts: int  # epoch ms

    def to_json(self) -> bytes:
        attributes = {name: list(values) for name, values in self.attributes.items()}
        doc = {"item_id": self.item_id, "attributes": attributes, "available": self.available, "ts": self.ts}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _name(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise InvalidEvent("wrong_type", f"{where} must be a string, got {_kind(text)}", "attributes")
    if not text.strip():
        raise InvalidEvent("empty_field", f"{where} is blank", "attributes")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidEvent("field_too_long", f"{where} has {len(text)} chars > {MAX_NAME_CHARS}", "attributes")
    return text.strip()


def _values(field: str, raw: object) -> tuple[str, ...]:
    """One field's values: a string or a list of strings, distinct, in the order given."""
    listed = [raw] if isinstance(raw, str) else raw
    if not isinstance(listed, list):
        detail = f"'attributes.{field[:40]}' must be a string or a list of strings, got {_kind(raw)}"
        raise InvalidEvent("wrong_type", detail, "attributes")
    if len(listed) > MAX_VALUES_PER_FIELD:
        detail = f"'attributes.{field[:40]}' has {len(listed)} values > {MAX_VALUES_PER_FIELD}"
        raise InvalidEvent("context_too_large", detail, "attributes")
    values = [_name(v, f"a value of 'attributes.{field[:40]}'") for v in listed]
    return tuple(dict.fromkeys(values))


def _attributes(doc: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    if "attributes" not in doc:
        raise InvalidEvent("missing_field", "'attributes' is required (may be {})", "attributes")
    raw = doc["attributes"]
    if not isinstance(raw, dict):
        raise InvalidEvent("wrong_type", f"'attributes' must be an object, got {_kind(raw)}", "attributes")
    if len(raw) > MAX_FIELDS:
        raise InvalidEvent("context_too_large", f"'attributes' has {len(raw)} fields > {MAX_FIELDS}", "attributes")
    out: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        field = _name(key, "an attribute name")
        if field.startswith("_"):
            detail = f"attribute names starting with '_' are reserved: {field[:40]!r}"
            raise InvalidEvent("reserved_name", detail, "attributes")
        values = _values(field, value)
        if values:
            out[field] = tuple(dict.fromkeys(out.get(field, ()) + values))
    pairs = sum(len(v) for v in out.values())
    if pairs > MAX_VALUES_PER_ITEM:
        detail = f"'attributes' has {pairs} values > {MAX_VALUES_PER_ITEM}"
        raise InvalidEvent("context_too_large", detail, "attributes")
    return dict(sorted(out.items()))


def decode_catalogue(raw: bytes, limits: Limits, now_ms: int) -> CatalogueEvent:
    """Raw message bytes -> CatalogueEvent, or InvalidEvent with the first fault found."""
    doc = _load_object(raw, limits)
    item_id = _id(doc, "item_id", limits)
    attributes = _attributes(doc)
    available = doc.get("available", True)
    if not isinstance(available, bool):
        raise InvalidEvent("wrong_type", f"'available' must be true or false, got {_kind(available)}", "available")
    if "ts" not in doc:
        raise InvalidEvent("missing_field", "'ts' is required", "ts")
    return CatalogueEvent(item_id, attributes, available, parse_ts(doc["ts"], limits, now_ms))


def from_stored(raw: bytes | str) -> CatalogueEvent:
    """A record as recd stores it (``CatalogueEvent.to_json``, already validated) back into a CatalogueEvent."""
    doc = json.loads(raw)
    attributes = {str(k): tuple(str(v) for v in vs) for k, vs in doc["attributes"].items()}
    return CatalogueEvent(str(doc["item_id"]), attributes, bool(doc["available"]), int(doc["ts"]))
