"""Redis effects of ingest: one Lua call applies a whole batch atomically.

The scripts (``ingest.lua``, ``profile.lua`` beside this module) keep each
user's bounded history, item popularity, trending and segment popularity and
the changed-user queue, deduplicating by event (see keys.py for the formats).
Python only groups and encodes (with a cache of item numbers, so the script
need not look them up); Redis does the rest in one round trip.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis

from daemon.runtime.history import CRC_MASK, LUA_FORMATS, TYPE_CODES, code_of, weight_table
from daemon.runtime.keys import Keys, text
from schemas.events import InteractionEvent, ProfileEvent


@dataclass(frozen=True)
class StoreOptions:
    """The ingest knobs the scripts need."""

    history_len: int
    history_ttl_s: int  # 0: never expires
    trending_half_life_s: int
    rating_threshold: float
    weights: Mapping[str, float]  # by event type (history.event_weight)
    segment_keys: tuple[str, ...]  # profile attributes forming segments, coarsest first


@dataclass(frozen=True)
class Prepared:
    """An encoded event batch: the script's document and its JSON bytes."""

    doc: dict[str, Any]
    payload: bytes


@dataclass(frozen=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    new_items: int = 0


class ItemNumbers:
    """Client-side cache of item id -> dense number (numbers never change within a generation)."""

    def __init__(self, max_size: int = 2_000_000) -> None:
        self.generation = ""
        self.numbers: dict[str, int] = {}
        self.max_size = max_size

    def reset(self, generation: str) -> None:
        self.generation = generation
        self.numbers = {}

    def learn(self, items: list[list[object]], assigned: list[int]) -> None:
        if len(self.numbers) > self.max_size:
            self.numbers = {}
        for k in range(0, len(assigned), 2):
            self.numbers[str(items[int(assigned[k]) - 1][0])] = int(assigned[k + 1])


class RedisStore:
    """Applies batches of decoded events to Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, options: StoreOptions) -> None:
        self.client = client
        self.keys = keys
        self.options = options
        self._weight_of_code = weight_table(options.weights, options.rating_threshold).tolist()
        self.item_numbers = ItemNumbers()
        folder = resources.files("daemon.ingest")
        self._ingest = client.register_script(folder.joinpath("ingest.lua").read_text())
        self._profile = client.register_script(folder.joinpath("profile.lua").read_text())

    def _script_keys(self) -> list[str]:
        k = self.keys
        return [
            k.items,
            k.item_ids,
            k.item_seq,
            k.item_first_seen,
            k.popularity,
            k.trending,
            k.trending_epoch,
            k.item_generation,
            k.dirty,
            k.stats,
            k.segments,
        ]

    def encode_batch(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> dict[str, Any]:
        """Group (event, message ms) pairs by user, in arrival order, as the script's document:
        per user ``[user, sec, crc24, item index, code, weight, msg_ms, sec, ...]``."""
        by_user: dict[str, list[object]] = {}
        index: dict[str, int] = {}
        items: list[list[object]] = []
        known = self.item_numbers.numbers
        weight_of, crc32, codes, max_sec = self._weight_of_code, zlib.crc32, TYPE_CODES, 0
        for event, msg_ms in events:  # the ingest hot path: kept flat on purpose
            pos = index.get(event.item_id)
            if pos is None:
                items.append([event.item_id, known.get(event.item_id, 0)])
                pos = index[event.item_id] = len(items)
            code = code_of("rating", event.value) if event.type == "rating" else codes[event.type]
            sec = event.ts // 1000
            max_sec = max(max_sec, sec)
            user = by_user.get(event.user_id)
            if user is None:
                user = by_user[event.user_id] = [event.user_id]
            user.extend((sec, crc32(event.event_id.encode()) & CRC_MASK, pos, code, weight_of[code], msg_ms))
        return self._document(now_ms, max_sec, items, list(by_user.values()))

    def _document(
        self, now_ms: int, max_sec: int, items: list[list[object]], users: list[list[object]]
    ) -> dict[str, Any]:
        opts = self.options
        return {
            "rec": LUA_FORMATS,
            "now": now_ms,
            "ttl": opts.history_ttl_s,
            "hl": opts.trending_half_life_s,
            "n": opts.history_len,
            "seg": list(opts.segment_keys),
            "gen": self.item_numbers.generation,
            "token": uuid.uuid4().hex,  # names a new generation if the items hash is gone
            "max_sec": max_sec,
            "items": items,
            "u": users,
        }

    def prepare(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> Prepared:
        """Encode a batch (CPU work the caller can do while Redis runs the previous one)."""
        doc = self.encode_batch(events, now_ms)
        return Prepared(doc, orjson.dumps(doc))

    def apply_events(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> BatchResult:
        """Apply a batch; raises redis errors (the caller retries, nothing is half-applied)."""
        return self.apply_prepared(self.prepare(events, now_ms))

    def apply_prepared(self, prepared: Prepared) -> BatchResult:
        doc = prepared.doc
        reply = self._run(prepared.payload)
        if int(reply[0]) == -1:  # our cached item numbers are from another generation
            self.item_numbers.reset(text(reply[1]))
            for item in doc["items"]:
                item[1] = 0
            doc["gen"] = self.item_numbers.generation
            reply = self._run(orjson.dumps(doc))
        if text(reply[4]) != self.item_numbers.generation:
            self.item_numbers.reset(text(reply[4]))
        self.item_numbers.learn(doc["items"], [int(x) for x in reply[5]])
        return BatchResult(*(int(x) for x in reply[:4]))

    def _run(self, payload: bytes) -> Any:
        return self._ingest(keys=self._script_keys(), args=[self.keys.prefix, payload])

    def apply_profiles(self, profiles: Iterable[tuple[ProfileEvent, int]]) -> BatchResult:
        """Apply profile events (newest event time wins); returns applied and 'duplicates' (older)."""
        rows = []
        for profile, msg_ms in profiles:
            flat = [part for kv in sorted(profile.attributes.items()) for part in kv]
            rows.append([profile.user_id, profile.ts, msg_ms, flat])
        if not rows:
            return BatchResult()
        payload = orjson.dumps({"ttl": self.options.history_ttl_s, "p": rows})
        reply = self._profile(keys=[self.keys.dirty, self.keys.stats], args=[self.keys.prefix, payload])
        return BatchResult(applied=int(reply[0]), duplicates=int(reply[1]))
