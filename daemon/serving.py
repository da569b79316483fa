"""The serve role: changed users -> user vectors -> faiss -> filter -> lists in Redis.

Each step claims a batch of changed users (fresh changes first, then refreshes
after a model swap) and reads their histories in the same script call, turns
the histories into arrays (histories.py), folds the warm users in and searches
the index for all of them at once, and writes every list - with its model
version and time - in one round trip (packed by hand: wire.py) that also
acknowledges the claim, sent from a writer thread while the next step claims
and computes. Users the model cannot serve yet get cold-start lists
(coldstart.py); only their profiles are read. One process alone serves ~7-18k
users/s (bench/serve.py; slow to quiet days of the 2-core dev box) at 256 or
1,024 users a step alike; on a busy machine, where every round trip to Redis
waits behind ingest's scripts, 1,024 (the default most a step takes) kept lists
about twice as fresh as 256 (bench/freshness.py, README).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from daemon.coldstart import ColdStart, pick_new_item
from daemon.histories import HistoryBatch, PositionMap, code_weights
from daemon.index import ServingIndex
from daemon.keys import Keys, text
from daemon.metrics import Metrics
from daemon.modelwatch import ModelWatcher
from daemon.state import StateReader
from daemon.wire import Commands, send
from daemon.workqueue import Claim, WorkQueue
from schemas.records import RecommendationList, SimilarList
from trainer.models.base import History

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    top_k: int = 10
    batch: int = 1024
    cold_min_history: int = 1
    new_item_slots: int = 1
    new_item_window_ms: int = 86_400_000
    recency_half_life_s: float = 7 * 86_400.0
    list_ttl_s: int = 0
    refresh_window_ms: int = 30 * 86_400_000
    weights: Mapping[str, float] | None = None
    rating_threshold: float = 4.0
    similar_chunk: int = 500
    exclusions_refresh_s: float = 1.0


class ListMaker:
    """Builds recommendation lists for a batch of users from their histories and the served index."""

    def __init__(
        self, options: ServeOptions, cold: ColdStart, names: Callable[[Iterable[int]], Mapping[int, str]]
    ) -> None:
        self.options = options
        self.cold = cold
        self.names = names  # item number -> item id (cached by the reader)
        self.code_weight = code_weights(options.weights or {}, options.rating_threshold)
        self._positions: PositionMap | None = None

    def make(
        self,
        index: ServingIndex | None,
        batch: HistoryBatch,
        segments_of: Callable[[list[str]], dict[str, list[str]]],
        excluded: set[str],
        now_ms: int,
    ) -> list[RecommendationList]:
        """Lists for every user of ``batch``: ANN for users with enough positive history the model knows,
        cold start (profile segments, read only for those users) for the rest."""
        weight = batch.decayed_weights(self.code_weight, now_ms / 1000, self.options.recency_half_life_s)
        pos = self._position_map(index).lookup(batch.item, self.names) if index else np.full(len(weight), -1)
        useful = (pos >= 0) & (weight > 0)
        counts = np.bincount(batch.owner()[useful], minlength=len(batch.users))
        is_warm = counts >= max(1, self.options.cold_min_history)  # without a model no position is known
        lists = []
        if index is not None and is_warm.any():
            starts, warm = (np.cumsum(counts) - counts).tolist(), np.flatnonzero(is_warm).tolist()
            useful_pos, useful_w = pos[useful], weight[useful].astype(np.float32)
            histories = [
                History(useful_pos[starts[r] : starts[r] + counts[r]], useful_w[starts[r] : starts[r] + counts[r]])
                for r in warm
            ]  # slices: np.split's per-piece cost was 5% of serving
            lists = self._ann(index, batch, warm, histories, pos, excluded, now_ms)
        cold = np.flatnonzero(~is_warm).tolist()
        segments = segments_of([batch.users[r] for r in cold]) if cold else {}
        version = index.version if index else "none"
        for row in cold:
            user = batch.users[row]
            seen = self._ids(batch.item[batch.bounds[row] : batch.bounds[row + 1]]) | excluded
            items, scores, source = self.cold.for_user(segments.get(user, []), seen, self.options.top_k)
            lists.append(RecommendationList(user, items, scores, source, version, now_ms))
        return lists

    def _position_map(self, index: ServingIndex) -> PositionMap:
        if self._positions is None or self._positions.version != index.version:
            self._positions = PositionMap(index.version, index.item_pos)
        return self._positions

    def _ids(self, numbers: npt.NDArray[np.int64]) -> set[str]:
        if not len(numbers):
            return set()
        listed = numbers.tolist()
        names = self.names(listed)
        return {names[n] for n in listed if n in names}

    def _ann(
        self,
        index: ServingIndex,
        batch: HistoryBatch,
        rows: list[int],
        histories: list[History],
        pos: npt.NDArray[np.int64],
        excluded: set[str],
        now_ms: int,
    ) -> list[RecommendationList]:
        """ANN lists for the users at ``rows``, whose ``histories`` come from ``make``; ``pos`` is each record's
        model position (-1 when unknown): every known one is seen, positive or not."""
        bounds, known = batch.bounds.tolist(), pos >= 0
        known_pos, cut = pos[known], np.concatenate(([0], np.cumsum(known)))[batch.bounds].tolist()
        seen = [known_pos[cut[r] : cut[r + 1]] for r in rows]
        queries = index.model.query_vectors(histories)
        banned = np.asarray([index.item_pos[i] for i in excluded if i in index.item_pos], np.int64)
        found = index.top_unseen_batch(queries, seen, banned, self.options.top_k)
        fresh = self.cold.new_items(index.item_pos, self.options.new_item_window_ms, now_ms)
        ids, k, out = index.item_ids, self.options.top_k, []
        for row, (positions, scores) in zip(rows, found, strict=True):
            user, lo, hi = batch.users[row], bounds[row], bounds[row + 1]
            items = [ids[p] for p in positions]
            if len(items) < k:  # a tiny catalogue or a voracious user: pad from trending
                items, scores = self._pad(items, scores, self._ids(batch.item[lo:hi]) | excluded)
            if fresh:  # new items are ones the model lacks: only those of the user's need names
                self._expose_new(user, items, fresh, self._ids(batch.item[lo:hi][~known[lo:hi]]) | excluded)
            out.append(RecommendationList(user, items, scores, "ann", index.version, now_ms))
        return out

    def _pad(self, items: list[str], scores: list[float], seen: set[str]) -> tuple[list[str], list[float]]:
        taken = set(items) | seen
        extra = [i for i, _ in self.cold.popular() if i not in taken][: self.options.top_k - len(items)]
        return items + extra, scores + [0.0] * len(extra)

    def _expose_new(self, user: str, items: list[str], fresh: list[str], seen: set[str]) -> None:
        """Give the last ``new_item_slots`` slots of ``items`` (in place) to new items the model lacks."""
        taken = set(items)
        for slot in range(len(items) - min(self.options.new_item_slots, len(items)), len(items)):
            item = pick_new_item(user, fresh, seen, taken)
            if item is None:
                break
            items[slot] = item
            taken.add(item)


class Server:
    """The serve role (``step()`` / ``shutdown()``)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        options: ServeOptions,
        watcher: ModelWatcher,
        metrics: Metrics,
        segment_keys: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = keys
        self.options = options
        self.watcher = watcher
        self.metrics = metrics
        self.clock = clock
        self.queue = WorkQueue(client, keys)
        self.reader = StateReader(client, keys, segment_keys)
        self.cold = ColdStart(client, keys)
        self.maker = ListMaker(options, self.cold, self.reader.item_ids)
        self._similar_todo: list[int] = []
        self._exclusions: tuple[float, set[str]] | None = None  # (read at, items)
        # A step's lists go out on this thread while the next step claims and computes (see step()).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="recd-serve-write")
        self._writing: Future[None] | None = None

    def step(self) -> int:
        now_ms = int(self.clock() * 1000)
        swapped = self.watcher.poll()
        if swapped is not None:
            queued = self.queue.enqueue_refresh(swapped.version, now_ms - self.options.refresh_window_ms)
            self._similar_todo = list(range(len(swapped.item_ids)))
            log.info("model %s: refreshing %d active users' lists", swapped.version, queued)
        claims = self.queue.claim(self.options.batch, now_ms, with_history=True)
        if not claims:
            self.flush()
            self._write_similar()
            self.metrics.dirty_users.set(self.queue.depth())
            return 0
        started = time.perf_counter()
        lists = self.serve(claims, now_ms)
        self.metrics.serve_seconds.observe(time.perf_counter() - started)
        return len(lists)

    def serve(self, claims: list[Claim], now_ms: int) -> list[RecommendationList]:
        """Lists for the claimed users, handed to the writer thread (with the claims' acknowledgement) before
        returning; ``flush()`` waits for them. The previous write is awaited first, so writes land in order and
        its errors surface here; it overlapped this step's claim and compute, time that serving otherwise spent
        waiting for Redis behind ingest's scripts. Users whose lists are still being written stay leased, so
        no other claim takes them meanwhile."""
        batch = HistoryBatch.decode([c.user_id for c in claims], [c.history for c in claims])
        lists = self.maker.make(self.watcher.current, batch, self._segments, self._excluded(), now_ms)
        self.flush()
        self._writing = self._writer.submit(self._write, lists, batch, claims)
        return lists

    def flush(self) -> None:
        """Wait until the lists handed to the writer are in Redis (raises what writing them raised)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _segments(self, users: list[str]) -> dict[str, list[str]]:
        return {u: p.segments for u, p in self.reader.profiles(users).items() if p is not None}

    def _excluded(self) -> set[str]:
        """Ops' exclusions, re-read at most every ``exclusions_refresh_s`` (a round trip saved per step)."""
        now = time.monotonic()
        if self._exclusions is None or now - self._exclusions[0] >= self.options.exclusions_refresh_s:
            reply: Any = self.client.smembers(self.keys.exclusions)
            self._exclusions = (now, {text(m) for m in reply})
        return self._exclusions[1]

    def _write(self, lists: list[RecommendationList], batch: HistoryBatch, claims: list[Claim]) -> None:
        """The lists, when each changed user was served (for refreshes after a swap) and the claims' acks: one
        round trip. ``active`` holds wall-clock times, never event times: a replay of last year's events is as
        recent as today's for the refresh window."""
        commands = Commands()  # packed by hand: a redis-py pipeline cost ~3x the Python (wire.py)
        commands.set_many(
            ((self.keys.rec(rec.user_id).encode(), rec.to_json()) for rec in lists), self.options.list_ttl_s or None
        )
        served_ms = int(self.clock() * 1000)
        changed = [x for c in claims if not c.swap for x in (served_ms, c.user_id)]  # a refresh is no activity
        if changed:
            commands.add("ZADD", self.keys.active, *changed)
        self.queue.ack(commands, [c.user_id for c in claims])
        send(self.client, commands)
        written = int(self.clock() * 1000)
        for source, n in Counter(rec.source.split(":", 1)[0] for rec in lists).items():
            self.metrics.lists.labels(source).inc(n)
        for claim in claims:
            if not claim.swap:
                self.metrics.freshness.observe(max(0.0, (written - claim.score) / 1000))

    def _write_similar(self) -> None:
        """After a swap, when idle: item-to-item lists, a chunk per step."""
        index = self.watcher.current
        if index is None or not self._similar_todo:
            return
        chunk, self._similar_todo = (
            self._similar_todo[: self.options.similar_chunk],
            self._similar_todo[self.options.similar_chunk :],
        )
        now_ms = int(self.clock() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for pos, (items, scores) in zip(
            chunk, index.similar_batch(np.asarray(chunk, np.int64), self.options.top_k), strict=True
        ):
            item = index.item_ids[pos]
            pipe.set(self.keys.sim(item), SimilarList(item, items, scores, index.version, now_ms).to_json())
        pipe.execute()

    def shutdown(self) -> None:
        """Finish the write in hand; claims not acknowledged expire and return to the queue."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
