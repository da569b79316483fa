"""Reading what ingest wrote: histories, profiles, the item dictionary, and the per-shard aggregates
(popularity, trending, stats, who was served), merged across shards."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from daemon.runtime.history import Entry, entries
from daemon.runtime.keys import Keys, text
from daemon.runtime.profiles import segment_chain
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import ConfigError

STATS_FIELDS = ("applied", "duplicates", "stale", "profiles")


@dataclass(frozen=True, slots=True)
class Profile:
    attributes: dict[str, str]
    ts: int
    segments: list[str]  # coarsest first


def each_shard(
    topology: Topology, keys: Keys, command: Callable[[Any, int], Any], all_replies: bool = False
) -> list[Any]:
    """``command(pipeline, shard)`` for every shard, in one pipeline per node; by shard, the reply of the last
    command it added (it returns how many it added when that is not one), or with ``all_replies`` the list of
    them all."""
    groups: dict[int, tuple[redis.Redis, list[int]]] = {}
    for shard in range(keys.shards):
        node = topology.node_of(keys.stats(shard))
        groups.setdefault(id(node), (node, []))[1].append(shard)
    replies: list[Any] = [None] * keys.shards
    try:
        for node, shards in groups.values():
            pipe = node.pipeline(transaction=False)
            ends: list[int] = []
            for shard in shards:
                added = command(pipe, shard)
                ends.append((ends[-1] if ends else 0) + (added if isinstance(added, int) and added > 1 else 1))
            got = pipe.execute()
            for k, (shard, end) in enumerate(zip(shards, ends, strict=True)):
                replies[shard] = got[(ends[k - 1] if k else 0) : end] if all_replies else got[end - 1]
    except redis.RedisError:
        topology.refresh()
        raise
    return replies


def check_layout(topology: Topology, keys: Keys) -> None:
    """Refuse a prefix written with another key layout (the one before virtual shards, or another shard
    count: users would land in other shards than their histories); mark a fresh prefix as ours."""
    client = topology.client
    if client.exists(keys.legacy_items):
        raise ConfigError(
            f"Redis holds recd state of the layout before virtual shards under prefix {keys.prefix!r}: replay the "
            "topics into a new RECD_REDIS_PREFIX (`recd rebuild` or a fresh consumer group), then switch over"
        )
    marker = f"sharded {keys.shards}"
    client.set(keys.layout, marker, nx=True)
    found = text(client.get(keys.layout) or b"")
    if found != marker:
        raise ConfigError(
            f"prefix {keys.prefix!r} was written with {found!r}, not {marker!r}: RECD_REDIS_SHARDS cannot change for "
            "a prefix that holds data; use the old value, or replay the topics into a new prefix"
        )


def merge_tops(
    tops: Iterable[Iterable[tuple[Any, float]]], n: int, scale: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Per-shard (member, score) lists summed by member (each shard's scores times ``scale[shard]``): the
    ``n`` best. Exact for members in every shard's list; a shard's part below its list's end is left out."""
    total: defaultdict[str, float] = defaultdict(float)
    for shard, top in enumerate(tops):
        factor = scale[shard] if scale is not None else 1.0
        for member, score in top:
            total[text(member)] += float(score) * factor
    return heapq.nlargest(n, total.items(), key=lambda pair: pair[1])


class StateReader:
    """Batched reads of recd's Redis state, with an item-number cache of at most ``cache_items`` entries
    (a catalogue that keeps growing must not grow a serving process without bound)."""

    def __init__(
        self, topology: Topology, keys: Keys, segment_keys: tuple[str, ...] = (), cache_items: int = 2_000_000
    ) -> None:
        self.topology = topology
        self.client = topology.client
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
            reply: Any = self.client.hmget(self.keys.item_ids, chunk)
            for number, raw in zip(chunk, reply, strict=True):
                if raw is not None:
                    self._item_ids[number] = text(raw)
        return self._item_ids

    def history_blobs(self, user_ids: Sequence[str]) -> list[bytes | None]:
        """Users' packed histories, read with one MGET per shard (a shard is one slot)."""
        by_shard: dict[int, list[int]] = {}
        for position, user in enumerate(user_ids):
            by_shard.setdefault(self.keys.shard_of(user), []).append(position)
        blobs: list[bytes | None] = [None] * len(user_ids)
        groups: dict[int, tuple[redis.Redis, list[list[int]]]] = {}
        for positions in by_shard.values():
            node = self.topology.node_of(self.keys.history(user_ids[positions[0]]))
            groups.setdefault(id(node), (node, []))[1].append(positions)
        try:
            for node, shards in groups.values():
                pipe = node.pipeline(transaction=False)
                for positions in shards:
                    pipe.mget([self.keys.history(user_ids[p]) for p in positions])
                for positions, got in zip(shards, pipe.execute(), strict=True):
                    for p, blob in zip(positions, got, strict=True):
                        blobs[p] = blob
        except redis.RedisError:
            self.topology.refresh()
            raise
        return blobs

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[Entry]]:
        """Users' histories (oldest first); users without one map to []."""
        return {u: entries(b) for u, b in zip(user_ids, self.history_blobs(user_ids), strict=True)}

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
            fields.pop("_seg", None)
            out[user] = Profile(fields, ts, segment_chain(fields, self.segment_keys))
        return out

    def totals(self) -> dict[str, int]:
        """Ingest's counters summed over shards, and the newest event second (``last_ts``)."""
        rows = each_shard(self.topology, self.keys, lambda p, s: p.hmget(self.keys.stats(s), *STATS_FIELDS, "last_ts"))
        out = {name: sum(int(row[k] or 0) for row in rows) for k, name in enumerate(STATS_FIELDS)}
        out["last_ts"] = max((int(float(row[-1] or 0)) for row in rows), default=0)
        return out

    def queued(self) -> int:
        """Users waiting in any changed-user queue (fresh, leased, refresh after a swap), over every shard."""
        k = self.keys

        def sizes(pipe: Any, shard: int) -> int:
            pipe.zcard(k.dirty(shard))
            pipe.zcard(k.dirty_inflight(shard))
            pipe.zcard(k.swap_queue(shard))
            return 3

        total = 0
        for shard_sizes in each_shard(self.topology, k, sizes, all_replies=True):
            total += sum(int(n) for n in shard_sizes)
        return total

    def popularity(self, n: int = -1) -> list[tuple[str, float]]:
        """Items by all-time positive weight, summed over shards (``n`` < 0: every item)."""
        tops = each_shard(
            self.topology,
            self.keys,
            lambda p, s: p.zrevrange(self.keys.popularity(s), 0, n - 1 if n > 0 else -1, withscores=True),
        )
        return merge_tops(tops, n if n > 0 else 1 << 62)

    def recently_served(self, n: int) -> list[str]:
        """The ``n`` users whose lists were written most recently for a change of theirs."""
        tops = each_shard(
            self.topology, self.keys, lambda p, s: p.zrevrange(self.keys.active(s), 0, n - 1, withscores=True)
        )
        return [user for user, _ in merge_tops(tops, n)]

    def segment_scores(self, segment: str) -> dict[str, float]:
        """Positive weight per item counted at this finest segment, summed over shards."""
        tops = each_shard(
            self.topology, self.keys, lambda p, s: p.zrange(self.keys.segment(s, segment), 0, -1, withscores=True)
        )
        return dict(merge_tops(tops, 1 << 62))

    def segment_names(self) -> set[str]:
        """Every finest segment with counts in any shard."""
        sets = each_shard(self.topology, self.keys, lambda p, s: p.smembers(self.keys.segments(s)))
        return {text(name) for members in sets for name in members}
