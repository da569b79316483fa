"""Lists for users the model cannot serve yet: profile segments, then global trending.

Ingest counts positive events at each user's finest segment
(``seg:country=US|age_band=25-34|gender=F``); a coarser segment's popularity is
the union of the finest segments under it, computed in Redis (ZUNIONSTORE)
and cached here for ``refresh_s``. New items (seen recently, not yet in the
model) are offered from here too, for the exposure slot.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import redis

from daemon.runtime.keys import Keys, text

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
        self, client: redis.Redis, keys: Keys, refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.keys = keys
        self.refresh_s = refresh_s
        self.clock = clock
        self._cache: dict[str, _Cached] = {}

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

    def _top(self, key: str) -> list[tuple[str, float]]:
        reply: Any = self.client.zrevrange(key, 0, POOL - 1, withscores=True)
        return [(text(m), float(s)) for m, s in reply]

    def _segment_pool(self, segment: str, max_age_s: float) -> list[tuple[str, float]]:
        # the segment list changes only when a new segment appears: re-read it often, it is small
        names = self._cached("segs", self._segment_names, min(self.refresh_s, SEGS_REFRESH_S, max_age_s))
        finest = [name for name, _ in names]
        members = [s for s in finest if s == segment or s.startswith(segment + "|")]
        if not members:
            return []
        if members == [segment]:
            return self._top(self.keys.segment(segment))
        target = self.keys.prefix + "segcache:" + segment
        pipe = self.client.pipeline(transaction=False)
        pipe.zunionstore(target, [self.keys.segment(m) for m in members])
        pipe.expire(target, max(1, int(self.refresh_s * 2)))
        pipe.execute()
        return self._top(target)

    def _segment_names(self) -> list[tuple[str, float]]:
        return [(text(s), 0.0) for s in self.client.smembers(self.keys.segments)]  # type: ignore[union-attr]

    def popular(self) -> list[tuple[str, float]]:
        return self._cached("trend", lambda: self._top(self.keys.trending))

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
            scores: Any = self.client.zmscore(self.keys.trending, ids)
            ranked = sorted(zip(ids, (float(s or 0.0) for s in scores), strict=True), key=lambda p: -p[1])
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
