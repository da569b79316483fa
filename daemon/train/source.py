"""Training data from Redis: every user's stored history as one ``Interactions``.

Every primary is scanned (SCAN on each node of a cluster) and its histories
read in chunks, one MGET per shard of a chunk (a shard is one slot); each
user's history is read whole and atomically (one key), so the snapshot is
consistent per user. A chunk's records are decoded with one ``np.frombuffer``
(no object per record) and weighed by the history module's rule. The
watermark (events applied before the scan started) says what the model saw.

For a model that learns from item attributes, ``read_attributes`` adds the
catalogue's attributes of the snapshot's items (every item's newest record,
read shard by shard with HSCAN; items without a record have none). An item's
attributes describe it whether or not it is available: availability is
serving's concern, not training's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import redis

from daemon.runtime.catalogue import records
from daemon.runtime.history import RATING_CODE, RECORD, check_blob
from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology
from daemon.runtime.state import StateReader
from trainer.attributes import ItemAttributes
from trainer.interactions import Interactions


@dataclass(frozen=True)
class Snapshot:
    data: Interactions
    applied_events: int  # recd's applied-event counter before the scan
    last_event_s: int
    attributes: ItemAttributes | None = None  # the catalogue's, of ``data.item_ids``; None: not read


@dataclass
class _Columns:
    """Decoded chunks, concatenated at the end: record owner (user row), item number, code, second."""

    users: list[str] = field(default_factory=list)
    parts: list[npt.NDArray[np.void]] = field(default_factory=list)
    owners: list[npt.NDArray[np.int32]] = field(default_factory=list)

    def add(self, users: list[str], blobs: list[bytes | None]) -> None:
        kept, counts = [], []
        for user, blob in zip(users, blobs, strict=True):
            count = check_blob(user, blob)
            if count:
                self.users.append(user)
                kept.append(blob)
                counts.append(count)
        if kept:
            first = len(self.users) - len(kept)
            self.parts.append(np.frombuffer(b"".join(b for b in kept if b), RECORD))
            self.owners.append(np.repeat(np.arange(first, len(self.users), dtype=np.int32), counts))

    def columns(self) -> tuple[npt.NDArray[np.void], npt.NDArray[np.int32]]:
        """(every record, its owner's row), the chunks released as they are joined."""
        records = np.concatenate(self.parts) if self.parts else np.zeros(0, RECORD)
        self.parts = []
        owner = np.concatenate(self.owners) if self.owners else np.zeros(0, np.int32)
        self.owners = []
        return records, owner


def read_snapshot(
    topology: Topology,
    keys: Keys,
    weights: npt.NDArray[np.float64],
    chunk: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> Snapshot:
    """Scan all histories into aligned arrays (users in scan order, items sorted by id); ``weights`` is
    ``history.weight_table``: an event's weight by its code byte. ``on_progress`` gets the users read so far
    after each chunk."""
    reader = StateReader(topology, keys)
    totals = reader.totals()
    cols = _Columns()
    report = on_progress or (lambda _users: None)
    try:
        for node in topology.primaries():
            batch: list[bytes] = []
            for key in node.scan_iter(match=keys.history_pattern(), count=chunk):
                batch.append(key)
                if len(batch) >= chunk:
                    cols.add(*_read_chunk(node, keys, batch))
                    report(len(cols.users))
                    batch = []
            if batch:
                cols.add(*_read_chunk(node, keys, batch))
                report(len(cols.users))
    except redis.RedisError:
        topology.refresh()
        raise
    records, owner = cols.columns()
    items, item_ids = _item_positions(reader, records["item"])
    keep: slice | npt.NDArray[np.bool_] = slice(None)  # every record's item known: views, no copies
    if not (items >= 0).all():
        keep = items >= 0
    code = records["code"][keep]
    data = Interactions(
        owner[keep],
        items[keep],
        weights.astype(np.float32)[code],
        _ratings(code),
        np.multiply(records["ts"][keep], 1000, dtype=np.int64),
        cols.users,
        item_ids,
    )
    return Snapshot(data, totals["applied"], totals["last_ts"])


def read_attributes(topology: Topology, keys: Keys, item_ids: Sequence[str]) -> ItemAttributes:
    """The catalogue's attributes of ``item_ids`` (in that order; an item without a record has none). The
    catalogue is streamed and only these items' records are kept."""
    wanted = set(item_ids)
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    try:
        for rec in records(topology, keys):
            if rec.item_id in wanted and rec.attributes:
                found[rec.item_id] = rec.attributes
    except redis.RedisError:
        topology.refresh()
        raise
    return ItemAttributes.from_mapping(dict(sorted(found.items()))).align(item_ids)  # a vocabulary in item order


def _read_chunk(node: redis.Redis, keys: Keys, found: list[bytes]) -> tuple[list[str], list[bytes | None]]:
    """(users, their histories) of a chunk of history keys of one node: one MGET per shard, one pipeline."""
    by_shard: dict[int, list[tuple[bytes, str]]] = {}
    for key in found:
        shard, user = keys.history_owner(key)
        by_shard.setdefault(shard, []).append((key, user))
    pipe = node.pipeline(transaction=False)
    for group in by_shard.values():
        pipe.mget([key for key, _ in group])
    users: list[str] = []
    blobs: list[bytes | None] = []
    for group, got in zip(by_shard.values(), pipe.execute(), strict=True):
        users += [user for _, user in group]
        blobs += got
    return users, blobs


def _ratings(code: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Each record's rating (NaN for other event types)."""
    values = np.full(len(code), np.nan, np.float32)
    rated = code >= RATING_CODE
    values[rated] = (code[rated].astype(np.float32) - RATING_CODE) / 2
    return values


def _item_positions(reader: StateReader, numbers: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.int32], list[str]]:
    """(each record's item position, -1 where the dictionary does not know it; the item ids, sorted). Item
    numbers are dense, so a table indexed by number maps them without sorting the records."""
    if not len(numbers):
        return np.zeros(0, np.int32), []
    present = np.zeros(int(numbers.max()) + 1, np.bool_)
    present[numbers] = True
    uniq = np.flatnonzero(present).tolist()
    names = reader.item_ids(uniq)
    item_ids = sorted({names[n] for n in uniq if n in names})
    pos = {item: k for k, item in enumerate(item_ids)}
    table = np.full(len(present), -1, np.int32)
    table[uniq] = [pos[names[n]] if n in names else -1 for n in uniq]
    return table[numbers], item_ids
