"""Reading what ingest wrote: histories, profiles, popularity (for serving and training)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from daemon.ingest.store import segment_chain
from daemon.runtime.keys import HISTORY_RECORD_SIZE, Keys, decode_code, text
from schemas.events import EVENT_TYPES

_RECORD = struct.Struct(">IHBIB")  # second, crc high 16 bits, crc low 8 bits, item, code


@dataclass(frozen=True, slots=True)
class Entry:
    """One history record, decoded."""

    ts: int  # epoch seconds
    crc: int
    item: int  # dense item number (see keys.items)
    type: str
    value: float


@dataclass(frozen=True, slots=True)
class Profile:
    attributes: dict[str, str]
    ts: int
    segments: list[str]  # coarsest first


def decode_history(blob: bytes | None) -> list[Entry]:
    """Packed records -> entries, oldest first."""
    if not blob:
        return []
    if len(blob) % HISTORY_RECORD_SIZE:
        raise ValueError(f"history blob of {len(blob)} bytes is not a whole number of records")
    out = []
    for ts, crc_hi, crc_lo, item, code in _RECORD.iter_unpack(blob):
        index, value = decode_code(code)
        out.append(Entry(ts, crc_hi << 8 | crc_lo, item, "rating" if index < 0 else EVENT_TYPES[index], value))
    return out


class StateReader:
    """Batched reads of recd's Redis state, with an item-number cache of at most ``cache_items`` entries
    (a catalogue that keeps growing must not grow a serving process without bound)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, segment_keys: tuple[str, ...] = (), cache_items: int = 2_000_000
    ) -> None:
        self.client = client
        self.keys = keys
        self.segment_keys = segment_keys
        self.cache_items = cache_items
        self._item_ids: dict[int, str] = {}

    def item_ids(self, numbers: Iterable[int]) -> dict[int, str]:
        """Item number -> item id for ``numbers`` (cached; numbers are never reused). The mapping returned
        holds at least the numbers asked for that exist; a full cache starts again empty first."""
        numbers = list(numbers)
        unknown = {n for n in numbers if n not in self._item_ids}
        if len(self._item_ids) + len(unknown) > self.cache_items:
            self._item_ids, unknown = {}, set(numbers)
        missing = sorted(unknown)
        for start in range(0, len(missing), 10_000):
            chunk = missing[start : start + 10_000]
            for number, raw in zip(chunk, self.client.hmget(self.keys.item_ids, chunk), strict=True):
                if raw is not None:
                    self._item_ids[number] = text(raw)
        return self._item_ids

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[Entry]]:
        """Users' histories (oldest first); users without one map to []."""
        pipe = self.client.pipeline(transaction=False)
        for user in user_ids:
            pipe.get(self.keys.history(user))
        return {user: decode_history(blob) for user, blob in zip(user_ids, pipe.execute(), strict=True)}

    def histories_by_item_id(self, user_ids: Sequence[str]) -> dict[str, list[tuple[str, Entry]]]:
        hist = self.histories(user_ids)
        names = self.item_ids(e.item for entries in hist.values() for e in entries)
        return {u: [(names.get(e.item, ""), e) for e in entries] for u, entries in hist.items()}

    def profiles(self, user_ids: Sequence[str]) -> dict[str, Profile | None]:
        pipe = self.client.pipeline(transaction=False)
        for user in user_ids:
            pipe.hgetall(self.keys.profile(user))
        out: dict[str, Profile | None] = {}
        for user, raw in zip(user_ids, pipe.execute(), strict=True):
            if not raw:
                out[user] = None
                continue
            fields = {text(k): text(v) for k, v in dict(raw).items()}
            ts = int(fields.pop("_ts", "0"))
            out[user] = Profile(fields, ts, segment_chain(fields, self.segment_keys))
        return out

    def top(self, key: str, n: int) -> list[tuple[str, float]]:
        reply: Any = self.client.zrevrange(key, 0, n - 1, withscores=True)
        return [(text(m), float(s)) for m, s in reply]

    def active_users(self, since_ms: int = 0, batch: int = 10_000) -> Iterator[list[str]]:
        """Users with an event since ``since_ms``, newest first, in batches."""
        start = 0
        while True:
            chunk: Any = self.client.zrevrangebyscore(self.keys.active, "+inf", since_ms, start=start, num=batch)
            if not chunk:
                return
            yield [text(u) for u in chunk]
            start += len(chunk)
