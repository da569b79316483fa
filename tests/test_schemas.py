"""The committed JSON Schema files are what the code generates, and agree with the decoder."""

from __future__ import annotations

import json
from pathlib import Path

import schemas
from schemas.events import EVENT_TYPES
from schemas.jsonschema import all_schemas, render

FOLDER = Path(schemas.__file__).parent


def test_committed_files_match_generated() -> None:
    generated = all_schemas()
    assert set(generated) == {p.name for p in FOLDER.glob("*.schema.json")}
    for name, doc in generated.items():
        assert (FOLDER / name).read_text(encoding="utf-8") == render(doc), (
            f"{name} is stale: run `python -m schemas.jsonschema`"
        )


def test_interaction_schema_lists_the_decoder_rules() -> None:
    doc = json.loads((FOLDER / "interaction_event.schema.json").read_text())
    assert doc["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert set(doc["required"]) == {"event_id", "user_id", "item_id", "type", "ts"}
    assert doc["then"] == {"required": ["value"]}
