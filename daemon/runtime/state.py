"""Reading what ingest wrote: histories, profiles, popularity (for serving and training)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from daemon.runtime.history import Entry, entries
from daemon.runtime.keys import Keys, text
from daemon.runtime.profiles import segment_chain


@dataclass(frozen=True, slots=True)
class Profile:
    attributes: dict[str, str]
    ts: int
    segments: list[str]  # coarsest first


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
        return {user: entries(blob) for user, blob in zip(user_ids, pipe.execute(), strict=True)}

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
