"""Reading the item catalogue ingest keeps in Redis (daemon/ingest/catalogue.py writes it): every item's
newest record, the unavailable items, and the change streams serving follows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.runtime.keys import Keys, text
from daemon.runtime.redisconn import Topology
from daemon.runtime.state import each_shard
from schemas.catalogue import CatalogueEvent, from_stored

SCAN_COUNT = 2000  # records per HSCAN round trip


@dataclass
class Catalogue:
    """Every item's attributes (field -> values) and the items that are unavailable."""

    attributes: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    since: dict[str, int] = field(default_factory=dict)  # each item's record time (epoch ms)


@dataclass(frozen=True)
class Change:
    """One entry of a shard's change stream."""

    shard: int
    entry_id: str
    item_id: str
    change: str  # new | update
    available: bool


def records(topology: Topology, keys: Keys) -> Iterator[CatalogueEvent]:
    """Every item's newest record, shard by shard (HSCAN: bounded round trips, no long command)."""
    for shard in range(keys.shards):
        node = topology.node_of(keys.catalogue(shard))
        for _item, raw in node.hscan_iter(keys.catalogue(shard), count=SCAN_COUNT):
            yield from_stored(raw)


def records_of(topology: Topology, keys: Keys, items: list[str]) -> dict[str, CatalogueEvent]:
    """The newest records of ``items`` the catalogue has (one HMGET per shard); items it lacks are left out."""
    by_shard: dict[int, list[str]] = {}
    for item in items:
        by_shard.setdefault(keys.shard_of(item), []).append(item)
    out: dict[str, CatalogueEvent] = {}
    for shard, names in by_shard.items():
        key = keys.catalogue(shard)
        for raw in topology.node_of(key).hmget(key, names):
            if raw is not None:
                rec = from_stored(raw)
                out[rec.item_id] = rec
    return out


def read_catalogue(topology: Topology, keys: Keys) -> Catalogue:
    """The whole catalogue: attributes and record time of every item, and the unavailable ones."""
    out = Catalogue()
    for rec in records(topology, keys):
        out.attributes[rec.item_id] = rec.attributes
        out.since[rec.item_id] = rec.ts
        if not rec.available:
            out.unavailable.add(rec.item_id)
    return out


def log_heads(topology: Topology, keys: Keys) -> list[str]:
    """By shard, the id of the newest change-stream entry ("0-0" for an empty stream): where to follow from."""

    def last(pipe: Any, shard: int) -> None:
        pipe.xrevrange(keys.catalogue_log(shard), count=1)

    return [text(reply[0][0]) if reply else "0-0" for reply in each_shard(topology, keys, last)]


def read_changes(topology: Topology, keys: Keys, after: list[str], count: int = 1000) -> list[Change]:
    """Change-stream entries after ``after`` (by shard, updated in place to the last entry read), at most
    ``count`` per shard, in stream order within a shard."""

    def since(pipe: Any, shard: int) -> None:
        pipe.xrange(keys.catalogue_log(shard), min=f"({after[shard]}", count=count)

    out: list[Change] = []
    for shard, entries in enumerate(each_shard(topology, keys, since)):
        for entry_id, fields in entries or ():
            got = {text(k): text(v) for k, v in fields.items()}
            out.append(Change(shard, text(entry_id), got["item"], got["change"], got["available"] == "1"))
            after[shard] = text(entry_id)
    return out
