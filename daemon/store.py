"""Redis effects of ingest: one Lua call applies a whole batch atomically.

The scripts (``ingest.lua``, ``profile.lua`` beside this module) keep each
user's bounded history, item popularity, trending and segment popularity, the
active-user and changed-user sets, deduplicating by event (see keys.py for the
formats). Python only groups and encodes; Redis does the rest in one round trip.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

import redis

from daemon.keys import SEGMENT_SEPARATOR, VALUE_SCALE, Keys
from schemas.events import EVENT_TYPES, InteractionEvent, ProfileEvent

TYPE_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}
MAX_VALUE10 = 32767


@dataclass(frozen=True)
class StoreOptions:
    """The ingest knobs the scripts need (taken from Settings)."""

    history_len: int = 100
    history_ttl_s: int = 0
    trending_half_life_s: int = 86400
    rating_threshold: float = 4.0
    weights: Mapping[str, float] | None = None
    segment_keys: tuple[str, ...] = ("country", "age_band", "gender")


@dataclass(frozen=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    new_items: int = 0


def event_weight(event: InteractionEvent, weights: Mapping[str, float], rating_threshold: float) -> float:
    """Implicit weight of one event: a rating is positive only at or above the threshold."""
    weight = weights.get(event.type, 0.0)
    if event.type == "rating":
        return weight if event.value is not None and event.value >= rating_threshold else 0.0
    return weight


def segment_chain(attributes: Mapping[str, str], keys: tuple[str, ...]) -> list[str]:
    """Cold-start segments of a profile, coarsest first: 'country=US', 'country=US|age_band=25-34', ...

    The chain stops at the first attribute the profile lacks."""
    chain: list[str] = []
    parts: list[str] = []
    for key in keys:
        val = attributes.get(key)
        if not val:
            break
        parts.append(f"{key}={val.replace('|', '/').replace(chr(10), ' ')}")
        chain.append("|".join(parts))
    return chain


def encode_event(event: InteractionEvent, weight: float, msg_ms: int) -> list[object]:
    """One event as the script's record: [sec, crc, item, code, value*10, weight, msg_ms]."""
    val10 = 0
    if event.value is not None:
        val10 = max(-MAX_VALUE10, min(MAX_VALUE10, round(event.value * VALUE_SCALE)))
    return [
        event.ts // 1000, zlib.crc32(event.event_id.encode()), event.item_id,
        TYPE_CODES[event.type], val10, weight, msg_ms,
    ]


class RedisStore:
    """Applies batches of decoded events to Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, options: StoreOptions) -> None:
        self.client = client
        self.keys = keys
        self.options = options
        self.weights = dict(options.weights or {})
        folder = resources.files("daemon")
        self._ingest = client.register_script(folder.joinpath("ingest.lua").read_text())
        self._profile = client.register_script(folder.joinpath("profile.lua").read_text())

    def _script_keys(self) -> list[str]:
        k = self.keys
        return [
            k.items, k.item_ids, k.item_seq, k.item_first_seen, k.popularity, k.trending,
            k.trending_epoch, k.active, k.dirty, k.stats,
        ]

    def encode_batch(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> str:
        """Group (event, message ms) pairs by user, in arrival order, as the script's JSON."""
        by_user: dict[str, list[list[object]]] = {}
        opts = self.options
        for event, msg_ms in events:
            weight = event_weight(event, self.weights, opts.rating_threshold)
            by_user.setdefault(event.user_id, []).append(encode_event(event, weight, msg_ms))
        doc = {
            "now": now_ms, "ttl": opts.history_ttl_s, "hl": opts.trending_half_life_s,
            "n": opts.history_len, "u": [[user, evs] for user, evs in by_user.items()],
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)

    def apply_events(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> BatchResult:
        """Apply a batch; raises redis errors (the caller retries, nothing is half-applied)."""
        payload = self.encode_batch(events, now_ms)
        reply = self._ingest(keys=self._script_keys(), args=[self.keys.prefix, payload])
        return BatchResult(*(int(x) for x in reply))

    def apply_profiles(self, profiles: Iterable[tuple[ProfileEvent, int]]) -> BatchResult:
        """Apply profile events (newest event time wins); returns applied and 'duplicates' (older)."""
        rows = []
        for profile, msg_ms in profiles:
            flat = [part for kv in sorted(profile.attributes.items()) for part in kv]
            chain = SEGMENT_SEPARATOR.join(segment_chain(profile.attributes, self.options.segment_keys))
            rows.append([profile.user_id, profile.ts, msg_ms, chain, flat])
        if not rows:
            return BatchResult()
        doc = {"ttl": self.options.history_ttl_s, "p": rows}
        payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        reply = self._profile(keys=[self.keys.dirty, self.keys.stats], args=[self.keys.prefix, payload])
        return BatchResult(applied=int(reply[0]), duplicates=int(reply[1]))
