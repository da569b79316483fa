"""Redis effects of ingest: a batch applies as one atomic script per virtual shard it touches.

Python groups the batch's events by the users' shards and encodes them; the item dictionary gives unknown
item ids their numbers first (``items.lua``, one slot, only for ids this process has not seen); then
``ingest.lua`` runs once per shard, on the node owning the shard's slot, in one pipeline per node followed
by ``WAIT`` for the replicas (daemon/runtime/scripts.py). Each script keeps its users' bounded histories,
the shard's popularity, trending and segment popularity and its changed-user queue, deduplicating by event
(formats: daemon/runtime/history.py). A replay changes nothing, so a batch cut short by a failure is simply
applied again.

Segment popularity needs each user's finest segment *when the event is applied*; the scripts take its key
in KEYS, so the store remembers every user's segment (from the profiles it applied) and the script checks
it against the profile: a user whose segment differs is sent again with the right key.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import exceptions as rex

from daemon.ingest.catalogue import CatalogueStore
from daemon.runtime.history import CRC_MASK, LUA_FORMATS, TYPE_CODES, code_of, weight_table
from daemon.runtime.keys import Keys, text
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import Topology
from daemon.runtime.scripts import Call, Script, run
from schemas.catalogue import CatalogueEvent
from schemas.events import InteractionEvent, ProfileEvent

# A batch whose item ids this process knows asks the item dictionary nothing, but checks at most this often
# whether the dictionary was lost (its generation token changed): cached numbers would then name other items.
GENERATION_CHECK_S = 1.0
MISMATCH_ROUNDS = 3  # profiles that change between rounds are caught again; three rounds are plenty
CACHE_USERS = 1_000_000  # users whose segment the store remembers (emptied when full)


class ProfilesMoving(rex.TryAgainError):
    """Users' profiles changed segment again and again while their events were applied: try the batch later."""


@dataclass(frozen=True)
class StoreOptions:
    """The ingest knobs the scripts need."""

    history_len: int
    history_ttl_s: int  # 0: never expires
    trending_half_life_s: int
    rating_threshold: float
    weights: Mapping[str, float]  # by event type (history.event_weight)
    segment_keys: tuple[str, ...]  # profile attributes forming segments, coarsest first
    catalogue_log_len: int = 10_000  # approximate cap of each shard's catalogue change stream


@dataclass
class ShardBatch:
    """One shard's part of a batch: its users' events and the items they name (1-based in ``items``)."""

    users: list[list[Any]] = field(default_factory=list)  # [user, sec, crc24, item index, code, w, msg_ms, ...]
    items: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # the script's keys up to the segments' (every user's)
    payload: bytes = b""  # the script's document of every user


@dataclass(frozen=True)
class Prepared:
    """An event batch grouped by shard (the CPU work the caller does while Redis runs the previous one)."""

    shards: dict[int, ShardBatch]
    items: list[str]  # every item id of the batch, once
    max_sec: int
    now_ms: int


@dataclass(frozen=True)
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    new_items: int = 0

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(*(a + b for a, b in zip(self.counts(), other.counts(), strict=True)))

    def counts(self) -> tuple[int, int, int, int]:
        return self.applied, self.duplicates, self.stale, self.new_items


class ItemNumbers:
    """Client-side cache of item id -> dense number (numbers never change within a generation)."""

    def __init__(self, max_size: int = 2_000_000) -> None:
        self.generation = ""
        self.numbers: dict[str, int] = {}
        self.max_size = max_size

    def reset(self, generation: str) -> None:
        self.generation = generation
        self.numbers = {}

    def learn(self, ids: list[str], numbers: list[int]) -> None:
        if len(self.numbers) + len(ids) > self.max_size:
            self.numbers = {}
        self.numbers.update(zip(ids, numbers, strict=True))


class RedisStore:
    """Applies batches of decoded events and profiles to Redis."""

    def __init__(self, topology: Topology, keys: Keys, options: StoreOptions) -> None:
        self.topology = topology
        self.keys = keys
        self.options = options
        self._weight_of_code = weight_table(options.weights, options.rating_threshold).tolist()
        self.item_numbers = ItemNumbers()
        self.segments: dict[str, str] = {}  # user -> finest segment ('' none), as last seen
        self._checked = -GENERATION_CHECK_S  # when the dictionary's generation was last checked (monotonic)
        self._ingest = Script.load("daemon.ingest", "ingest.lua")
        self._profile = Script.load("daemon.ingest", "profile.lua")
        self._items = Script.load("daemon.ingest", "items.lua")
        self.catalogue = CatalogueStore(topology, keys, options.catalogue_log_len)

    def prepare(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> Prepared:
        """Group (event, message ms) pairs by shard and user, in arrival order."""
        shards: dict[int, ShardBatch] = {}
        by_user: dict[str, tuple[list[Any], ShardBatch]] = {}
        batch_items: dict[str, None] = {}
        weight_of, crc32, codes, max_sec = self._weight_of_code, zlib.crc32, TYPE_CODES, 0
        for event, msg_ms in events:  # the ingest hot path: kept flat on purpose
            found = by_user.get(event.user_id)
            if found is None:
                number = self.keys.shard_of(event.user_id)
                shard = shards.get(number) or shards.setdefault(number, ShardBatch())
                user: list[Any] = [event.user_id]
                shard.users.append(user)
                by_user[event.user_id] = (user, shard)
            else:
                user, shard = found
            pos = shard.index.get(event.item_id)
            if pos is None:
                shard.items.append(event.item_id)
                pos = shard.index[event.item_id] = len(shard.items)
                batch_items[event.item_id] = None
            code = code_of("rating", event.value) if event.type == "rating" else codes[event.type]
            sec = event.ts // 1000
            max_sec = max(max_sec, sec)
            user.extend((sec, crc32(event.event_id.encode()) & CRC_MASK, pos, code, weight_of[code], msg_ms))
        for number, batch in shards.items():  # encoded here, on the caller's thread, while Redis runs the last batch
            self._encode(number, batch, batch.users, (now_ms, max_sec))
        return Prepared(shards, list(batch_items), max_sec, now_ms)

    def apply_events(self, events: Iterable[tuple[InteractionEvent, int]], now_ms: int) -> BatchResult:
        """Apply a batch; raises redis errors (the caller retries; a replay changes nothing)."""
        return self.apply_prepared(self.prepare(events, now_ms))

    def apply_prepared(self, prepared: Prepared) -> BatchResult:
        numbers, new_items = self._number_items(prepared.items, prepared.now_ms)
        result = BatchResult(new_items=new_items)
        pending = {shard: batch.users for shard, batch in prepared.shards.items()}
        for _ in range(MISMATCH_ROUNDS):
            sent = sorted(pending.items())
            calls = [self._call(shard, prepared.shards[shard], users, prepared, numbers) for shard, users in sent]
            replies = run(self.topology, calls)
            pending = {}
            for (shard, users), reply in zip(sent, replies, strict=True):
                result += BatchResult(int(reply[0]), int(reply[1]), int(reply[2]))
                again = self._learn_mismatches(users, reply[3])
                if again:
                    pending[shard] = again
            if not pending:
                return result
        raise ProfilesMoving(f"profiles kept changing under {len(pending)} shards' events; the batch is retried")

    def _learn_mismatches(self, sent: list[list[Any]], flat: list[Any]) -> list[list[Any]]:
        """Remember the segments the script found for users of ``sent`` (the call's users, 1-based in the
        reply); those users, with their events, to send again."""
        again = []
        if len(self.segments) > CACHE_USERS:
            self.segments = {}
        for k in range(0, len(flat), 2):
            user = sent[int(flat[k]) - 1]
            self.segments[user[0]] = text(flat[k + 1])
            again.append(user)
        return again

    def _encode(self, shard: int, batch: ShardBatch, users: list[list[Any]], prepared_at: tuple[int, int]) -> None:
        """The shard's keys (without the segments') and document for ``users``, into ``batch``."""
        k = self.keys
        keys = [k.popularity(shard), k.trending(shard), k.trending_epoch(shard), k.dirty(shard), k.stats(shard)]
        keys.append(k.segments(shard))
        for user in users:
            keys += [k.history(user[0]), k.profile(user[0])]
        opts = self.options
        doc = {
            "rec": LUA_FORMATS,
            "now": prepared_at[0],
            "ttl": opts.history_ttl_s,
            "hl": opts.trending_half_life_s,
            "n": opts.history_len,
            "max_sec": prepared_at[1],
            "check": bool(opts.segment_keys),
            "items": batch.items,
            "u": users,
        }
        batch.keys, batch.payload = keys, orjson.dumps(doc)

    def _call(
        self, shard: int, batch: ShardBatch, users: list[list[Any]], prepared: Prepared, numbers: dict[str, int]
    ) -> Call:
        """The script call of ``users`` of one shard, with each user's expected segment key."""
        if users is not batch.users:  # a round for some users only: their own keys and document
            batch = ShardBatch(users, batch.items, batch.index)
            self._encode(shard, batch, users, (prepared.now_ms, prepared.max_sec))
        names: dict[str, int] = {}
        expected = []
        for user in users:
            segment = self.segments.get(user[0], "")
            expected.append(names.setdefault(segment, len(names) + 1) if segment else 0)
        keys = batch.keys + [self.keys.segment(shard, name) for name in names]
        args = [
            batch.payload,
            orjson.dumps([numbers[i] for i in batch.items]),
            orjson.dumps(list(names)),
            orjson.dumps(expected),
        ]
        return Call(self._ingest, keys, args)

    def _number_items(self, ids: list[str], now_ms: int) -> tuple[dict[str, int], int]:
        """The number of every id of the batch, and how many ids were new to Redis. The cache may forget ids
        as it learns (it is bounded); the batch keeps its own numbers."""
        known = self.item_numbers.numbers
        numbers = {i: known[i] for i in ids if i in known}
        unknown = [i for i in ids if i not in numbers]
        if not unknown and time.monotonic() - self._checked < GENERATION_CHECK_S:
            return numbers, 0  # every id known: the dictionary's generation is checked at most this often
        self._checked = time.monotonic()
        generation, assigned, new = self._assign(unknown, now_ms)
        if generation != self.item_numbers.generation:  # the dictionary was lost: every cached number is void
            self.item_numbers.reset(generation)
            generation, assigned, more = self._assign(ids, now_ms)
            numbers, new = {}, new + more
        self.item_numbers.generation = generation
        self.item_numbers.learn(list(assigned), list(assigned.values()))
        numbers.update(assigned)
        return numbers, new

    def _assign(self, ids: list[str], now_ms: int) -> tuple[str, dict[str, int], int]:
        """(the dictionary's generation, the numbers of ``ids``, how many were new) from the item dictionary."""
        k = self.keys
        keys = [k.items, k.item_ids, k.item_seq, k.item_first_seen, k.item_generation]
        reply = run(self.topology, [Call(self._items, keys, [uuid.uuid4().hex, now_ms, *ids])])[0]
        if not self.item_numbers.generation:
            self.item_numbers.generation = text(reply[0])
        return text(reply[0]), dict(zip(ids, (int(n) for n in reply[2:]), strict=True)), int(reply[1])

    def apply_catalogue(self, records: list[CatalogueEvent]) -> tuple[int, int]:
        """Apply catalogue records (newest ts wins): (applied, unchanged)."""
        return self.catalogue.apply(records)

    def apply_profiles(self, profiles: Iterable[tuple[ProfileEvent, int]]) -> BatchResult:
        """Apply profile events (newest event time wins); returns applied and 'duplicates' (older)."""
        by_shard: dict[int, list[list[Any]]] = {}
        for profile, msg_ms in profiles:
            flat = [part for kv in sorted(profile.attributes.items()) for part in kv]
            segment = finest_segment(profile.attributes, self.options.segment_keys)
            row = [profile.user_id, profile.ts, msg_ms, segment, flat]
            by_shard.setdefault(self.keys.shard_of(profile.user_id), []).append(row)
        if len(self.segments) > CACHE_USERS:
            self.segments = {}
        calls = []
        for shard, rows in sorted(by_shard.items()):
            keys = [self.keys.dirty(shard), self.keys.stats(shard), *(self.keys.profile(r[0]) for r in rows)]
            payload = orjson.dumps({"ttl": self.options.history_ttl_s, "p": rows})
            calls.append(Call(self._profile, keys, [payload]))
        replies = run(self.topology, calls)
        for rows in by_shard.values():  # an older profile was not applied: a mismatch corrects it later
            self.segments.update((r[0], r[3]) for r in rows)
        return BatchResult(applied=sum(int(r[0]) for r in replies), duplicates=sum(int(r[1]) for r in replies))
