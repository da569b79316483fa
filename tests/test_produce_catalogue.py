"""``recd produce`` publishes the item catalogue before the events: dataset replays and synthetic streams, read
back from the real broker and decoded with the catalogue contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daemon.dev.publish import bounded_attributes, catalogue_record, publish_dataset, publish_synthetic
from daemon.dev.synthetic import PRICE_BANDS, SyntheticSpec, SyntheticWorld
from daemon.runtime.options import limits
from daemon.runtime.settings import Settings
from schemas.catalogue import (
    MAX_FIELDS,
    MAX_NAME_CHARS,
    MAX_VALUES_PER_FIELD,
    MAX_VALUES_PER_ITEM,
    CatalogueEvent,
    decode_catalogue,
)
from schemas.events import Limits
from tests.kafkatools import read_topic
from trainer.dataset_attributes import load_attributes

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

FIRST_S = 880_000_000  # 1997-11-20: the tiny dataset's earliest event
RELATIONS = 35  # knowledge-graph relations shared by items 1 and 2: more fields than MAX_FIELDS
INTERACTIONS = [(1, 1, 5), (1, 2, 4), (2, 2, 3), (2, 3, 5), (3, 4, 2), (3, 1, 4)]  # (user, item, rating)


def write_dataset(folder: Path) -> Path:
    """A RecBole dataset: items 1-4 rated, item 5 only in the metadata; items 1 and 2 with more knowledge-graph
    fields than the contract allows, one of them a reserved name; item 3 with an over-long genre."""
    folder.mkdir()
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{FIRST_S + 60 * k}" for k, (u, i, r) in enumerate(INTERACTIONS)]
    (folder / "tiny.inter").write_text("\n".join(inter) + "\n")
    genres = {1: "Comedy Drama", 2: "Action", 3: "Horror " + "X" * (MAX_NAME_CHARS + 1), 4: "Drama", 5: "Sci-Fi War"}
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [f"{i}\tMovie {i}\t{1990 + i}\t{g}" for i, g in genres.items()]
    (folder / "tiny.item").write_text("\n".join(item) + "\n")
    (folder / "tiny.link").write_text("item_id:token\tentity_id:token\n1\tm.1\n2\tm.2\n")
    relations = [f"film.r{r:02d}" for r in range(RELATIONS)] + ["_reserved"]
    kg = ["head_id:token\trelation_id:token\ttail_id:token"]
    kg += [f"m.{head}\t{rel}\tm.t{n}" for head in (1, 2) for n, rel in enumerate(relations)]
    (folder / "tiny.kg").write_text("\n".join(kg) + "\n")
    return folder


def records(settings: Settings, topic: str, expect: int) -> list[Any]:
    found = read_topic(settings, topic, expect)
    assert len(found) == expect, f"{len(found)} records on {topic}, expected {expect}"
    return found


def decoded(settings: Settings, found: list[Any]) -> dict[str, CatalogueEvent]:
    """Every record decoded with the contract, by item id; each keyed by that id."""
    out = {}
    for rec in found:
        event = decode_catalogue(bytes(rec.value), limits(settings), int(time.time() * 1000))
        assert rec.key == event.item_id.encode()
        out[event.item_id] = event
    return out


def test_a_dataset_replay_publishes_its_catalogue_before_its_events(settings: Settings, tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny")
    sent = publish_dataset(settings, path, limit=2)
    assert (sent.events, sent.catalogue) == (2, 5)
    catalogue = records(settings, settings.items_topic, 5)
    events = decoded(settings, catalogue)
    wanted = load_attributes(path)
    assert wanted is not None
    dataset = {item: {f: tuple(v) for f, v in attrs.items()} for item, attrs in wanted.to_mapping().items()}
    assert set(events) == {"1", "2", "3", "4", "5"}  # item 5 has no interactions: a new item
    for item in ("3", "4", "5"):
        assert events[item].attributes == dataset[item] and events[item].available
    assert events["3"].attributes["genre"] == ("Horror",)  # the over-long genre is dropped, not cut
    for item in ("1", "2"):  # more fields than the contract allows: the first MAX_FIELDS, none reserved
        fields = events[item].attributes
        assert len(dataset[item]) > MAX_FIELDS and len(fields) == MAX_FIELDS
        assert {"year", "decade", "genre"} <= set(fields) and not any(f.startswith("_") for f in fields)
        assert all(values == dataset[item][field] for field, values in fields.items())
    assert {e.ts for e in events.values()} == {FIRST_S * 1000}
    first_event = min(r.timestamp for r in records(settings, settings.events_topic, 2))
    assert max(r.timestamp for r in catalogue) <= first_event


def test_replaying_a_dataset_again_sends_identical_catalogue_bytes(settings: Settings, tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "tiny")
    assert publish_dataset(settings, path).catalogue == 5
    assert publish_dataset(settings, path, limit=1).catalogue == 5
    twice = Counter((bytes(r.key), bytes(r.value)) for r in records(settings, settings.items_topic, 10))
    assert len(twice) == 5 and set(twice.values()) == {2}


def test_produce_command_reports_the_catalogue(settings: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECD_")}
    env.update(
        RECD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        RECD_EVENTS_TOPIC=settings.events_topic,
        RECD_PROFILES_TOPIC=settings.profiles_topic,
        RECD_ITEMS_TOPIC=settings.items_topic,
    )
    path = write_dataset(tmp_path / "tiny")
    argv = [sys.executable, "-m", "daemon", "produce", "--dataset", str(path), "--limit", "3"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {
        "profiles": 0,
        "events": 3,
        "catalogue": 5,
        "topic": settings.events_topic,
        "items_topic": settings.items_topic,
    }


def test_the_synthetic_catalogue_names_each_items_cluster(settings: Settings) -> None:
    spec = SyntheticSpec(users=30, items=40, clusters=4, seed=5)
    sent = publish_synthetic(settings, spec, 100, profiles=False)
    assert (sent.profiles, sent.events, sent.catalogue) == (0, 100, 40)
    events = decoded(settings, records(settings, settings.items_topic, 40))
    world = SyntheticWorld(spec)
    assert set(events) == {world.item_id(i) for i in range(spec.items)}  # every item, seen in the events or not
    for i in range(spec.items):
        attrs = events[world.item_id(i)].attributes
        assert attrs["genre"] == (f"g{world.item_cluster[i]}",) and attrs["price_band"][0] in PRICE_BANDS
    in_cluster = sum(
        events[world.item_id(i)].attributes["price_band"][0] == PRICE_BANDS[world.item_cluster[i] % len(PRICE_BANDS)]
        for i in range(spec.items)
    )
    assert in_cluster >= spec.items // 2  # the price band leans on the cluster too
    assert {e.ts for e in events.values()} == {spec.start_ms}


def test_attributes_beyond_every_bound_are_cut_until_the_record_decodes() -> None:
    long_value = "v" * MAX_NAME_CHARS
    huge = {f"f{k:02d}": [f"{long_value[:-3]}{n:03d}" for n in range(40)] for k in range(40)}
    huge |= {" _hidden ": ["x"], "blank": ["  "], "y" * (MAX_NAME_CHARS + 1): ["x"]}
    cut = bounded_attributes(huge)
    assert len(cut) <= MAX_FIELDS and sum(len(v) for v in cut.values()) == MAX_VALUES_PER_ITEM
    assert all(len(v) <= MAX_VALUES_PER_FIELD and not f.startswith("_") for f, v in cut.items())
    bounds = Limits(max_bytes=4096)  # room for fewer values than MAX_VALUES_PER_ITEM: the last ones go
    record = catalogue_record("i1", huge, 0, bounds)
    raw = record.to_json()
    assert 0 < sum(len(v) for v in record.attributes.values()) < MAX_VALUES_PER_ITEM
    assert len(raw) <= bounds.max_bytes and record.ts == bounds.min_ts_ms
    assert decode_catalogue(raw, bounds, int(time.time() * 1000)) == record
    with pytest.raises(ValueError, match="item id"):
        catalogue_record(" ", {"genre": ["Drama"]}, 0, bounds)
