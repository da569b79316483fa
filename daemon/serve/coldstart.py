"""Lists for users the model cannot serve yet: profile segments, then global trending.

Ingest counts positive events at each user's finest segment
(``seg:country=US|age_band=25-34|gender=F``), in the user's virtual shard. A
segment's pool is the sum over shards of the finest segments under it (a
coarser segment is the union of its finer ones, computed per shard in Redis
with ZUNIONSTORE), and trending the sum of the shards' decayed scores brought
to one epoch; each is cached here for ``refresh_s``. The merge takes each
shard's top ``POOL``, so an item is counted whole where it is in every
shard's top (the items a list shows are). New items (seen recently, not yet
in the model) are offered from here too, for the exposure slot.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from daemon.runtime.keys import text
from daemon.runtime.state import StateReader, each_shard, merge_tops

POOL = 200  # candidates kept per segment, before filtering what a user has seen


SEGS_REFRESH_S = 2.0
SHORT_MAX_AGE_S = 0.25  # a pool too short for a user is re-read when older than this (at most once per interval)


@dataclass
class _Cached:
    at: float
    items: list[tuple[str, float]] = field(default_factory=list)


class ColdStart:
    """Segment and trending lists, cached; thread-safe enough (whole-value replacement)."""

    def __init__(
        self,
        reader: StateReader,
        trending_half_life_s: float,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.topology = reader.topology
        self.client = reader.client
        self.keys = reader.keys
        self.half_life_s = trending_half_life_s
        self.refresh_s = refresh_s
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._segments: tuple[float, list[list[str]]] | None = None  # (read at, each shard's finest segments)

    def _cached(
        self, name: str, load: Callable[[], list[tuple[str, float]]], refresh_s: float | None = None
    ) -> list[tuple[str, float]]:
        """``load()`` at most every ``refresh_s``; young (short) pools are re-read within seconds."""
        hit = self._cache.get(name)
        ttl = self.refresh_s if refresh_s is None else refresh_s
        if hit is not None and len(hit.items) < POOL:  # a new segment or a new deployment: fills up fast
            ttl = min(ttl, 1.0 if not hit.items else SEGS_REFRESH_S)
        if hit is None or self.clock() - hit.at > ttl:
            hit = _Cached(self.clock(), load())
            self._cache[name] = hit
        return hit.items

    def _tops(self, key_of: Callable[[int], str]) -> list[Any]:
        """Each shard's top ``POOL`` (member, score) of the zset ``key_of(shard)``."""
        return each_shard(self.topology, self.keys, lambda p, s: p.zrevrange(key_of(s), 0, POOL - 1, withscores=True))

    def _segment_pool(self, segment: str, max_age_s: float) -> list[tuple[str, float]]:
        """The pool of a segment: per shard the union of its finest segments there, summed over shards."""
        refresh = min(self.refresh_s, SEGS_REFRESH_S, max_age_s)
        by_shard = self._cached_segments(refresh)
        members = [[m for m in names if m == segment or m.startswith(segment + "|")] for names in by_shard]
        if not any(members):
            return []
        k = self.keys

        def top(pipe: Any, shard: int) -> int:
            names = members[shard]
            if len(names) <= 1:  # none (an empty read) or one: read it as it is
                pipe.zrevrange(k.segment(shard, names[0] if names else segment), 0, POOL - 1, withscores=True)
                return 1
            target = k.segment_cache(shard, segment)
            pipe.zunionstore(target, [k.segment(shard, m) for m in names])
            pipe.expire(target, max(1, int(self.refresh_s * 2)))
            pipe.zrevrange(target, 0, POOL - 1, withscores=True)
            return 3  # each_shard keeps the last reply: the top

        return merge_tops(each_shard(self.topology, self.keys, top), POOL)

    def _cached_segments(self, refresh_s: float) -> list[list[str]]:
        """Each shard's finest segments; the list changes only when a new segment appears: re-read often."""
        if self._segments is None or self.clock() - self._segments[0] > refresh_s:
            sets = each_shard(self.topology, self.keys, lambda p, s: p.smembers(self.keys.segments(s)))
            self._segments = (self.clock(), [sorted(text(m) for m in members) for members in sets])
        return self._segments[1]

    def _epoch_scale(self) -> list[float]:
        """Per shard, what brings its trending scores to the newest shard's epoch (each decays from its own)."""
        epochs = each_shard(self.topology, self.keys, lambda p, s: p.get(self.keys.trending_epoch(s)))
        newest = max((float(e) for e in epochs if e is not None), default=0.0)
        return [2.0 ** ((float(e) - newest) / self.half_life_s) if e is not None else 1.0 for e in epochs]

    def _trending(self) -> list[tuple[str, float]]:
        """Trending summed over shards, each shard's scores brought to the newest shard's epoch."""
        return merge_tops(self._tops(self.keys.trending), POOL, self._epoch_scale())

    def popular(self) -> list[tuple[str, float]]:
        return self._cached("trend", self._trending)

    def segment(self, segment: str, max_age_s: float | None = None) -> list[tuple[str, float]]:
        """The segment's pool, read no longer than ``max_age_s`` ago when given (else the cache's own rule)."""
        age = self.refresh_s if max_age_s is None else max_age_s
        return self._cached("seg:" + segment, lambda: self._segment_pool(segment, age), max_age_s)

    def for_user(self, segments: list[str], seen: Collection[str], k: int) -> tuple[list[str], list[float], str]:
        """Finest segment with k unseen items, coarser ones next, then trending."""
        for seg in reversed(segments):
            picked = [(i, s) for i, s in self.segment(seg) if i not in seen][:k]
            if len(picked) < k:  # a short pool may be a stale read from while the segment was filling up
                picked = [(i, s) for i, s in self.segment(seg, SHORT_MAX_AGE_S) if i not in seen][:k]
            if len(picked) >= k:
                return [i for i, _ in picked], [s for _, s in picked], f"coldstart:{seg}"
        picked = [(i, s) for i, s in self.popular() if i not in seen][:k]
        return [i for i, _ in picked], [s for _, s in picked], "popular"

    def new_items(self, known: Collection[str], window_ms: int, now_ms: int, n: int = 50) -> list[str]:
        """Items first seen within ``window_ms`` that ``known`` (the model) lacks, trending first."""

        def load() -> list[tuple[str, float]]:
            fresh: Any = self.client.zrevrangebyscore(
                self.keys.item_first_seen, "+inf", now_ms - window_ms, start=0, num=n * 4
            )
            ids = [text(m) for m in fresh if text(m) not in known]
            if not ids:
                return []
            per_shard = each_shard(self.topology, self.keys, lambda p, s: p.zmscore(self.keys.trending(s), ids))
            rows = [list(zip(ids, (float(x or 0.0) for x in row), strict=True)) for row in per_shard]
            ranked = merge_tops(rows, len(ids), self._epoch_scale())
            return ranked[:n]

        return [i for i, _ in self._cached("new", load)]


def pick_new_item(user_id: str, candidates: list[str], seen: Collection[str], taken: Collection[str]) -> str | None:
    """One new item for a user, spread across users (rotating by a hash of the user id)."""
    if not candidates:
        return None
    start = zlib.crc32(user_id.encode()) % len(candidates)
    for k in range(len(candidates)):
        item = candidates[(start + k) % len(candidates)]
        if item not in seen and item not in taken:
            return item
    return None
