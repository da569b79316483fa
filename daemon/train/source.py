"""Training data from Redis: every user's stored history as one ``Interactions``.

Every primary is scanned (SCAN on each node of a cluster) and its histories
read in chunks, one MGET per shard of a chunk (a shard is one slot); each
user's history is read whole and atomically (one key), so the snapshot is
consistent per user. A chunk's records are decoded with one ``np.frombuffer``
(no object per record) and weighed by the history module's rule. The
watermark (events applied before the scan started) says what the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import redis

from daemon.runtime.history import RATING_CODE, RECORD, check_blob
from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology
from daemon.runtime.state import StateReader
from trainer.interactions import Interactions


@dataclass(frozen=True)
class Snapshot:
    data: Interactions
    applied_events: int  # recd's applied-event counter before the scan
    last_event_s: int


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


def read_snapshot(topology: Topology, keys: Keys, weights: npt.NDArray[np.float64], chunk: int = 2000) -> Snapshot:
    """Scan all histories into aligned arrays (users in scan order, items sorted by id); ``weights`` is
    ``history.weight_table``: an event's weight by its code byte."""
    reader = StateReader(topology, keys)
    totals = reader.totals()
    cols = _Columns()
    try:
        for node in topology.primaries():
            batch: list[bytes] = []
            for key in node.scan_iter(match=keys.history_pattern(), count=chunk):
                batch.append(key)
                if len(batch) >= chunk:
                    cols.add(*_read_chunk(node, keys, batch))
                    batch = []
            if batch:
                cols.add(*_read_chunk(node, keys, batch))
    except redis.RedisError:
        topology.refresh()
        raise
    records = np.concatenate(cols.parts) if cols.parts else np.zeros(0, RECORD)
    owner = np.concatenate(cols.owners) if cols.owners else np.zeros(0, np.int32)
    items, item_ids, known = _item_positions(reader, records["item"].astype(np.int64))
    code = records["code"][known]
    data = Interactions(
        owner[known],
        items[known],
        weights[code].astype(np.float32),
        np.where(code >= RATING_CODE, (code.astype(np.float32) - RATING_CODE) / 2, np.nan).astype(np.float32),
        records["ts"][known].astype(np.int64) * 1000,
        cols.users,
        item_ids,
    )
    return Snapshot(data, totals["applied"], totals["last_ts"])


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


def _item_positions(
    reader: StateReader, numbers: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], list[str], npt.NDArray[np.bool_]]:
    """(each record's item position, item ids sorted, which records name an item the dictionary knows)."""
    uniq, inverse = np.unique(numbers, return_inverse=True)
    names = reader.item_ids(uniq.tolist())
    uniq_names = [names.get(n) for n in uniq.tolist()]
    item_ids = sorted({n for n in uniq_names if n is not None})
    pos = {item: k for k, item in enumerate(item_ids)}
    uniq_pos = np.asarray([pos[n] if n is not None else -1 for n in uniq_names], np.int32)
    items = uniq_pos[inverse] if len(numbers) else np.zeros(0, np.int32)
    return items, item_ids, items >= 0
