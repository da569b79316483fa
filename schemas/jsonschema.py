"""JSON Schema documents generated from the contracts in this package.

``python -m schemas.jsonschema`` rewrites the ``*.schema.json`` files beside this
module; a test fails when the committed files differ from what the code says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalogue import MAX_FIELDS, MAX_NAME_CHARS, MAX_VALUES_PER_FIELD, MAX_VALUES_PER_ITEM
from schemas.events import EVENT_TYPES, MIN_TS_MS, Limits
from schemas.records import MANIFEST_SCHEMA_VERSION

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://recd.dev/schemas/"


def _id_string(limits: Limits) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limits.max_id_len, "pattern": r"\S"}


def _str_map(entries: int, length: int) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": entries,
        "propertyNames": {"maxLength": length},
        "additionalProperties": {"type": "string", "maxLength": length},
    }


def _ts() -> dict[str, Any]:
    return {
        "description": "epoch milliseconds, or an RFC 3339 date-time with a zone; "
        "not before 1990-01-01, not more than the configured skew in the future",
        "oneOf": [{"type": "integer", "minimum": MIN_TS_MS}, {"type": "string", "format": "date-time"}],
    }


def interaction_event(limits: Limits | None = None) -> dict[str, Any]:
    lim = limits or Limits()
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "interaction_event.schema.json",
        "title": "recd interaction event",
        "description": "One implicit- or explicit-feedback event; Kafka key = user_id. "
        f"Encoded message at most {lim.max_bytes} bytes of UTF-8 JSON.",
        "type": "object",
        "required": ["event_id", "user_id", "item_id", "type", "ts"],
        "properties": {
            "event_id": _id_string(lim) | {"description": "unique per event; replays are ignored"},
            "user_id": _id_string(lim),
            "item_id": _id_string(lim),
            "type": {"enum": list(EVENT_TYPES)},
            "ts": _ts(),
            "value": {"type": "number", "minimum": -1e6, "maximum": 1e6, "description": "required when type is rating"},
            "context": _str_map(lim.max_context, lim.max_context_len),
        },
        "if": {"properties": {"type": {"const": "rating"}}},
        "then": {"required": ["value"]},
    }


def profile_event(limits: Limits | None = None) -> dict[str, Any]:
    lim = limits or Limits()
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "profile_event.schema.json",
        "title": "recd user profile event",
        "description": "User attributes (age band, gender, occupation, country, ...) used for "
        "cold-start segments; the newest ts wins.",
        "type": "object",
        "required": ["user_id", "attributes", "ts"],
        "properties": {
            "user_id": _id_string(lim),
            "attributes": _str_map(lim.max_attributes, lim.max_context_len),
            "ts": _ts(),
        },
    }


def catalogue_event(limits: Limits | None = None) -> dict[str, Any]:
    lim = limits or Limits()
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": r"\S"}
    values = {
        "oneOf": [name, {"type": "array", "maxItems": MAX_VALUES_PER_FIELD, "items": name}],
        "description": "one value or a list of them",
    }
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "catalogue_event.schema.json",
        "title": "recd item catalogue event",
        "description": "An item's attributes and availability; Kafka key = item_id; the newest ts wins. "
        f"At most {MAX_VALUES_PER_ITEM} values per item in all. available=false takes the item out of "
        "every list until a newer record makes it available again.",
        "type": "object",
        "required": ["item_id", "attributes", "ts"],
        "properties": {
            "item_id": _id_string(lim),
            "attributes": {
                "type": "object",
                "maxProperties": MAX_FIELDS,
                "propertyNames": name | {"pattern": r"^[^_]"},
                "additionalProperties": values,
            },
            "available": {"type": "boolean", "default": True},
            "ts": _ts(),
        },
    }


def _list_record(name: str, owner: str, extra: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        owner: {"type": "string"},
        "items": {"type": "array", "items": {"type": "string"}},
        "scores": {"type": "array", "items": {"type": "number"}},
        **extra,
        "model_version": {"type": "string"},
        "updated_at": {"type": "integer", "description": "epoch ms when the list was written"},
    }
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + f"{name}.schema.json",
        "type": "object",
        "required": list(props),
        "properties": props,
        "additionalProperties": False,
    }


def recommendation_list() -> dict[str, Any]:
    source = {"type": "string", "pattern": r"^(ann|popular|coldstart:.+)$"}
    doc = _list_record("recommendation_list", "user_id", {"source": source})
    doc["title"] = "value of rec:<user_id>"
    return doc


def similar_list() -> dict[str, Any]:
    doc = _list_record("similar_list", "item_id", {})
    doc["title"] = "value of sim:<item_id>"
    return doc


def model_manifest() -> dict[str, Any]:
    props: dict[str, Any] = {
        "version": {"type": "string"},
        "model_type": {"type": "string"},
        "config": {"type": "object"},
        "item_count": {"type": "integer", "minimum": 0},
        "dim": {"type": "integer", "minimum": 1},
        "trained_at": {"type": "integer"},
        "files": {"type": "array", "items": {"type": "string"}},
        "data_watermark": {"type": "object"},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "parent_version": {"type": ["string", "null"]},
        "schema_version": {"const": MANIFEST_SCHEMA_VERSION},
    }
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "model_manifest.schema.json",
        "title": "manifest.json beside a model snapshot's npz weights",
        "type": "object",
        "required": list(props),
        "properties": props,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema document."""
    docs = [
        interaction_event(),
        profile_event(),
        catalogue_event(),
        recommendation_list(),
        similar_list(),
        model_manifest(),
    ]
    return {str(doc["$id"]).rsplit("/", 1)[1]: doc for doc in docs}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_all(folder: Path) -> list[Path]:
    written = []
    for name, doc in all_schemas().items():
        path = folder / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(Path(__file__).parent):
        sys.stdout.write(f"wrote {written_path}\n")
