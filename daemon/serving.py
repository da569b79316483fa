"""The serve role: changed users -> user vectors -> faiss -> filter -> lists in Redis.

Each step claims a batch of changed users (fresh changes first, then refreshes
after a model swap), reads their histories and profiles in two round trips,
queries the ANN index for all warm users at once, and writes every list - with
its model version and time - in one pipeline that also acknowledges the claim.
Users the model cannot serve yet get cold-start lists (coldstart.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from daemon.coldstart import ColdStart, pick_new_item
from daemon.index import ServingIndex, top_unseen
from daemon.keys import Keys, text
from daemon.metrics import Metrics
from daemon.modelwatch import ModelWatcher
from daemon.state import Entry, StateReader
from daemon.workqueue import Claim, WorkQueue
from schemas.records import RecommendationList, SimilarList
from trainer.models.base import History

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    top_k: int = 10
    batch: int = 256
    cold_min_history: int = 1
    new_item_slots: int = 1
    new_item_window_ms: int = 86_400_000
    recency_half_life_s: float = 7 * 86_400.0
    list_ttl_s: int = 0
    refresh_window_ms: int = 30 * 86_400_000
    weights: Mapping[str, float] | None = None
    rating_threshold: float = 4.0
    similar_chunk: int = 500


def entry_weight(entry: Entry, weights: Mapping[str, float], threshold: float, now_s: float, half_life_s: float
                 ) -> float:
    """Implicit weight of a history entry, decayed by its age."""
    base = weights.get(entry.type, 0.0)
    if entry.type == "rating" and entry.value < threshold:
        base = 0.0
    if base <= 0:
        return 0.0
    return float(base * 2.0 ** (-max(0.0, now_s - entry.ts) / half_life_s))


class ListMaker:
    """Builds recommendation lists for a batch of users from their state and the served index."""

    def __init__(self, options: ServeOptions, cold: ColdStart) -> None:
        self.options = options
        self.cold = cold
        self.weights = dict(options.weights or {})

    def _history(self, index: ServingIndex, entries: list[tuple[str, Entry]], now_s: float) -> History | None:
        opts = self.options
        pos, weights = [], []
        for item_id, entry in entries:
            p = index.item_pos.get(item_id)
            w = entry_weight(entry, self.weights, opts.rating_threshold, now_s, opts.recency_half_life_s)
            if p is not None and w > 0:
                pos.append(p)
                weights.append(w)
        if len(pos) < max(1, opts.cold_min_history):
            return None
        return History(np.asarray(pos, np.int64), np.asarray(weights, np.float32))

    def make(self, index: ServingIndex | None, histories: dict[str, list[tuple[str, Entry]]],
             segments: dict[str, list[str]], excluded: set[str], now_ms: int) -> list[RecommendationList]:
        k, version = self.options.top_k, index.version if index else "none"
        warm: dict[str, History] = {}
        if index is not None:
            for user, entries in histories.items():
                hist = self._history(index, entries, now_ms / 1000)
                if hist is not None:
                    warm[user] = hist
        seen = {u: {i for i, _ in entries} | excluded for u, entries in histories.items()}
        lists = self._ann(index, warm, seen, now_ms) if index is not None and warm else []
        for user in histories:
            if user not in warm:
                items, scores, source = self.cold.for_user(segments.get(user, []), seen[user], k)
                lists.append(RecommendationList(user, items, scores, source, version, now_ms))
        return lists

    def _ann(self, index: ServingIndex, warm: dict[str, History], seen: dict[str, set[str]], now_ms: int
             ) -> list[RecommendationList]:
        k = self.options.top_k
        users = list(warm)
        queries = index.model.query_vectors([warm[u] for u in users])
        depth = k + min(200, max(len(seen[u]) for u in users)) + 10
        scores, found = index.search(queries, depth)
        fresh = self.cold.new_items(index.item_pos, self.options.new_item_window_ms, now_ms)
        out = []
        for row, user in enumerate(users):
            pairs = top_unseen(index.item_ids, found[row].tolist(), scores[row].tolist(), seen[user], k)
            if len(pairs) < k:  # a tiny catalogue or a voracious user: pad from trending
                taken = {i for i, _ in pairs} | seen[user]
                pairs += [(i, 0.0) for i, _ in self.cold.popular() if i not in taken][: k - len(pairs)]
            pairs = self._expose_new(user, pairs, fresh, seen[user])
            out.append(RecommendationList(user, [i for i, _ in pairs], [s for _, s in pairs], "ann",
                                          index.version, now_ms))
        return out

    def _expose_new(self, user: str, pairs: list[tuple[str, float]], fresh: list[str], seen: set[str]
                    ) -> list[tuple[str, float]]:
        """Give the last ``new_item_slots`` slots to new items the model does not know yet."""
        slots = min(self.options.new_item_slots, len(pairs))
        taken = {i for i, _ in pairs}
        for slot in range(len(pairs) - slots, len(pairs)):
            item = pick_new_item(user, fresh, seen, taken)
            if item is None:
                break
            pairs[slot] = (item, pairs[slot][1])
            taken.add(item)
        return pairs


class Server:
    """The serve role (``step()`` / ``shutdown()``)."""

    def __init__(self, client: redis.Redis, keys: Keys, options: ServeOptions, watcher: ModelWatcher,
                 metrics: Metrics, segment_keys: tuple[str, ...], clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.options = options
        self.watcher = watcher
        self.metrics = metrics
        self.clock = clock
        self.queue = WorkQueue(client, keys)
        self.reader = StateReader(client, keys, segment_keys)
        self.cold = ColdStart(client, keys)
        self.maker = ListMaker(options, self.cold)
        self._similar_todo: list[int] = []

    def step(self) -> int:
        now_ms = int(self.clock() * 1000)
        swapped = self.watcher.poll()
        if swapped is not None:
            queued = self.queue.enqueue_refresh(now_ms - self.options.refresh_window_ms)
            self._similar_todo = list(range(len(swapped.item_ids)))
            log.info("model %s: refreshing %d active users' lists", swapped.version, queued)
        claims = self.queue.claim(self.options.batch, now_ms)
        if not claims:
            self._write_similar()
            self.metrics.dirty_users.set(self.queue.depth())
            return 0
        started = time.perf_counter()
        lists = self.serve(claims, now_ms)
        self.metrics.serve_seconds.observe(time.perf_counter() - started)
        return len(lists)

    def serve(self, claims: list[Claim], now_ms: int) -> list[RecommendationList]:
        users = [c.user_id for c in claims]
        histories = self.reader.histories_by_item_id(users)
        profiles = self.reader.profiles(users)
        segments = {u: p.segments for u, p in profiles.items() if p is not None}
        excluded = self._excluded()
        lists = self.maker.make(self.watcher.current, histories, segments, excluded, now_ms)
        self._write(lists, histories, claims)
        return lists

    def _excluded(self) -> set[str]:
        reply: Any = self.client.smembers(self.keys.exclusions)
        return {text(m) for m in reply}

    def _write(self, lists: list[RecommendationList], histories: dict[str, list[tuple[str, Entry]]],
               claims: list[Claim]) -> None:
        ttl = self.options.list_ttl_s or None
        pipe = self.client.pipeline(transaction=False)
        for rec in lists:
            pipe.set(self.keys.rec(rec.user_id), rec.to_json(), ex=ttl)
            entries = histories.get(rec.user_id)
            if entries:
                pipe.zadd(self.keys.active, {rec.user_id: max(e.ts for _, e in entries) * 1000})
        self.queue.ack(pipe, [c.user_id for c in claims])
        pipe.execute()
        written = int(self.clock() * 1000)
        for rec in lists:
            self.metrics.lists.labels(rec.source.split(":", 1)[0]).inc()
        for claim in claims:
            if not claim.swap:
                self.metrics.freshness.observe(max(0.0, (written - claim.score) / 1000))

    def _write_similar(self) -> None:
        """After a swap, when idle: item-to-item lists, a chunk per step."""
        index = self.watcher.current
        if index is None or not self._similar_todo:
            return
        chunk, self._similar_todo = (self._similar_todo[: self.options.similar_chunk],
                                     self._similar_todo[self.options.similar_chunk:])
        now_ms = int(self.clock() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for pos, (items, scores) in zip(chunk, index.similar_batch(np.asarray(chunk, np.int64), self.options.top_k),
                                        strict=True):
            item = index.item_ids[pos]
            pipe.set(self.keys.sim(item), SimilarList(item, items, scores, index.version, now_ms).to_json())
        pipe.execute()

    def shutdown(self) -> None:
        """Claims not acknowledged expire and return to the queue; nothing else to hand back."""
