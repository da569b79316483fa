"""Training data from Redis: every user's stored history as one ``Interactions``.

Histories are read with SCAN + MGET in chunks; each user's history is read
whole and atomically (one key), so the snapshot is consistent per user. The
watermark (events applied before the scan started) says what the model saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from daemon.runtime.keys import Keys, text
from daemon.runtime.state import StateReader, decode_history
from trainer.interactions import Interactions


@dataclass(frozen=True)
class Snapshot:
    data: Interactions
    applied_events: int  # recd's applied-event counter before the scan
    last_event_s: int


def history_weight(kind: str, value: float, weights: Mapping[str, float], threshold: float) -> float:
    if kind == "rating":
        return weights.get("rating", 0.0) if value >= threshold else 0.0
    return weights.get(kind, 0.0)


def read_snapshot(
    client: redis.Redis, keys: Keys, weights: Mapping[str, float], threshold: float, chunk: int = 2000
) -> Snapshot:
    """Scan all histories into aligned arrays (users and items in first-seen order)."""
    stats: Any = client.hmget(keys.stats, "applied", "last_ts")
    applied, last = int(stats[0] or 0), int(stats[1] or 0)
    users: list[str] = []
    cols: dict[str, list[Any]] = {"u": [], "i": [], "w": [], "v": [], "t": []}
    reader = StateReader(client, keys)
    batch: list[Any] = []
    for key in client.scan_iter(match=keys.user_prefix() + "*:hist", count=chunk):
        batch.append(key)
        if len(batch) >= chunk:
            _add_chunk(client, batch, users, cols, weights, threshold)
            batch = []
    if batch:
        _add_chunk(client, batch, users, cols, weights, threshold)
    numbers = np.asarray(cols["i"], np.int64)
    names = reader.item_ids(int(n) for n in np.unique(numbers))
    order = sorted(set(names[int(n)] for n in np.unique(numbers) if int(n) in names))
    pos = {item: k for k, item in enumerate(order)}
    known = np.asarray([int(n) in names for n in numbers], bool)
    items = np.asarray([pos[names[int(n)]] if ok else 0 for n, ok in zip(numbers, known, strict=True)], np.int32)
    data = Interactions(
        np.asarray(cols["u"], np.int32)[known],
        items[known],
        np.asarray(cols["w"], np.float32)[known],
        np.asarray(cols["v"], np.float32)[known],
        np.asarray(cols["t"], np.int64)[known],
        users,
        order,
    )
    return Snapshot(data, applied, last)


def _add_chunk(
    client: redis.Redis,
    keys: list[Any],
    users: list[str],
    cols: dict[str, list[Any]],
    weights: Mapping[str, float],
    threshold: float,
) -> None:
    blobs: Any = client.mget(keys)
    for key, blob in zip(keys, blobs, strict=True):
        entries = decode_history(blob)
        if not entries:
            continue
        name = text(key)
        user = name[name.index("{") + 1 : name.rindex("}")]
        u = len(users)
        users.append(user)
        for e in entries:
            cols["u"].append(u)
            cols["i"].append(e.item)
            cols["w"].append(history_weight(e.type, e.value, weights, threshold))
            cols["v"].append(e.value if e.type == "rating" else np.nan)
            cols["t"].append(e.ts * 1000)
