"""The serve role: changed users -> lists in Redis, a batch per step.

Each step claims a batch of changed users (fresh changes first, then refreshes
after a model swap) and reads their histories in the same script call
(workqueue.py), has their lists made (lists.py), and writes every list - with
its model version and time - in one round trip (packed by hand: wire.py) that
also acknowledges the claim, sent from a writer thread while the next step
claims and computes. When idle after a swap it writes item-to-item lists.
Large steps (up to ``serve_batch`` users) keep lists fresher on a busy Redis,
where every round trip waits behind ingest's scripts (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from daemon.runtime.keys import Keys, text
from daemon.runtime.metrics import Metrics
from daemon.runtime.redisconn import Topology
from daemon.runtime.state import StateReader
from daemon.serve.catalogue import CatalogueFollower
from daemon.serve.coldstart import ColdStart
from daemon.serve.histories import HistoryBatch
from daemon.serve.index import ServingIndex
from daemon.serve.lists import ListMaker, ServeOptions
from daemon.serve.wire import RoutedCommands
from daemon.serve.workqueue import Claim, WorkQueue
from daemon.train.modelwatch import ModelWatcher
from schemas.records import RecommendationList, SimilarList

log = logging.getLogger(__name__)

EXCLUSIONS_REFRESH_S = 1.0  # ops' exclusions are re-read at most this often (a round trip saved per step)
SIMILAR_CHUNK = 500  # item-to-item lists written per idle step after a swap


class Server:
    """The serve role (``step()`` / ``shutdown()``)."""

    def __init__(
        self,
        topology: Topology,
        keys: Keys,
        options: ServeOptions,
        watcher: ModelWatcher,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.client = topology.client
        self.keys = keys
        self.options = options
        self.watcher = watcher
        self.metrics = metrics
        self.clock = clock
        self.queue = WorkQueue(topology, keys)
        self.reader = StateReader(topology, keys, options.segment_keys)
        self.cold = ColdStart(self.reader, options.trending_half_life_s)
        self.maker = ListMaker(options, self.cold, self.reader.item_ids)
        self.catalogue = CatalogueFollower(topology, keys, options.top_k, self._mark, options.new_item_slots)
        watcher.on_start.append(self.catalogue.build_started)
        watcher.on_built.append(self.catalogue.prepare)  # new items placed in the build thread
        self._similar_todo: list[str] = []  # after a swap, the items whose similar-items lists are rewritten
        self._similar_done = 0  # ... how many of them are
        self._exclusions: tuple[float, set[str]] | None = None  # (read at, items)
        # A step's lists go out on this thread while the next step claims and computes (see step()).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="recd-serve-write")
        self._writing: Future[None] | None = None
        # Wall ms when this process began building a newer model's index, and whether it served users since
        # (with the older model, or none): they are refreshed again after its own swap.
        self._build_started_ms: int | None = None
        self._served_while_building = False

    def step(self) -> int:
        now_ms = int(self.clock() * 1000)
        swapped = self.watcher.poll()
        if swapped is not None:
            self._after_swap(swapped, now_ms)
        elif self.watcher.building and self._build_started_ms is None:
            self._build_started_ms = now_ms
        self.catalogue.poll(self.watcher.current, now_ms)
        claims = self.queue.claim(self.options.batch, now_ms, with_history=True)
        self._served_while_building |= bool(claims) and self.watcher.building
        if not claims:
            self.flush()
            self._write_similar()
            self.metrics.dirty_users.set(self.queue.depth())
            return 0
        started = time.perf_counter()
        lists = self.serve(claims, now_ms)
        self.metrics.serve_seconds.observe(time.perf_counter() - started)
        return len(lists)

    def _after_swap(self, swapped: ServingIndex, now_ms: int) -> None:
        """Queue the lists the new model must rewrite: once per version across replicas, every user served
        within the refresh window; and, by this process, the users it served while it built the index (another
        replica may have swapped and queued the refresh before they were served, e.g. a replica starting while
        a model is published serves without one until its build ends)."""
        queued = self.queue.enqueue_refresh(swapped.version, now_ms - self.options.refresh_window_ms)
        if self._served_while_building and self._build_started_ms is not None:
            self.flush()  # their activity is recorded with their lists
            queued += self.queue.queue_refresh(self._build_started_ms)
        self._build_started_ms, self._served_while_building = None, False
        self.queue.reset_pacing()
        self.catalogue.on_swap(swapped)
        cold = swapped.cold.ids if swapped.cold is not None else []
        self._similar_todo, self._similar_done = [*cold, *swapped.item_ids], 0  # cold first: some have no list
        log.info("model %s: refreshing %d active users' lists", swapped.version, queued)

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
        """Ops' exclusions, re-read at most every ``EXCLUSIONS_REFRESH_S`` (a round trip saved per step), and
        the catalogue's unavailable items."""
        now = time.monotonic()
        if self._exclusions is None or now - self._exclusions[0] >= EXCLUSIONS_REFRESH_S:
            reply: Any = self.client.smembers(self.keys.exclusions)
            self._exclusions = (now, {text(m) for m in reply})
        unavailable = self.catalogue.unavailable
        return self._exclusions[1] | unavailable if unavailable else self._exclusions[1]

    def _mark(self, users: list[str]) -> None:
        self.queue.mark(users, int(self.clock() * 1000))

    def _write(self, lists: list[RecommendationList], batch: HistoryBatch, claims: list[Claim]) -> None:
        """The lists, when each changed user was served (for refreshes after a swap) and the claims' acks: one
        round trip per node. ``active`` holds wall-clock times, never event times: a replay of last year's events
        is as recent as today's for the refresh window."""
        commands = RoutedCommands(self.topology)  # packed by hand: a redis-py pipeline cost ~3x the Python
        ttl = self.options.list_ttl_s or None
        for key, group in self._by_key(lists):
            commands.for_key(key).set_many(group, ttl)
        served_ms = int(self.clock() * 1000)
        changed: dict[int, list[str | int]] = {}
        for claim in claims:
            if not claim.swap:  # a refresh is no activity
                changed.setdefault(self.keys.shard_of(claim.user_id), []).extend((served_ms, claim.user_id))
        for shard, members in changed.items():
            key = self.keys.active(shard)
            commands.for_key(key).add("ZADD", key, *members)
        self.queue.ack(commands, [c.user_id for c in claims])
        commands.send()
        written = int(self.clock() * 1000)
        for source, n in Counter(rec.source.split(":", 1)[0] for rec in lists).items():
            self.metrics.lists.labels(source).inc(n)
        for claim in claims:
            if not claim.swap:
                self.metrics.freshness.observe(max(0.0, (written - claim.score) / 1000))

    def _by_key(self, lists: list[RecommendationList]) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
        """(a key of the group, its (key, value) pairs): one group for a single Redis, one per node of a
        cluster (keyed by the first key: the same node's commands)."""
        pairs = [(self.keys.rec(rec.user_id), rec.to_json()) for rec in lists]
        if not self.topology.cluster:
            return [("", [(k.encode(), v) for k, v in pairs])] if pairs else []
        groups: dict[int, tuple[str, list[tuple[bytes, bytes]]]] = {}
        for key, value in pairs:
            groups.setdefault(id(self.topology.node_of(key)), (key, []))[1].append((key.encode(), value))
        return list(groups.values())

    def _write_similar(self) -> None:
        """After a swap, when idle: item-to-item lists of the catalogue's cold items and the model's items, a
        chunk per step."""
        index = self.watcher.current
        if index is None or self._similar_done >= len(self._similar_todo):
            return
        chunk = self._similar_todo[self._similar_done : self._similar_done + SIMILAR_CHUNK]
        self._similar_done += len(chunk)
        now_ms = int(self.clock() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for item, (items, scores) in zip(
            chunk, index.similar_items(chunk, self.options.top_k, self._excluded()), strict=True
        ):
            if items or item in index.item_pos:  # a cold item made unavailable since the swap is gone
                pipe.set(self.keys.sim(item), SimilarList(item, items, scores, index.version, now_ms).to_json())
        pipe.execute()

    def shutdown(self) -> None:
        """Finish the write in hand; claims not acknowledged expire and return to the queue."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
