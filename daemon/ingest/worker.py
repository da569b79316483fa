"""Ingest: poll -> decode -> dead-letter the bad -> Redis (one script call) -> commit.

One batch is written to Redis in a worker thread while the next is polled and
decoded; offsets are committed only after Redis acknowledged the batch that
holds them. A failed write is retried with backoff and never committed, so a
crash at any point redelivers, and the idempotent script makes the replay a
no-op. Only the thread that calls ``step()`` touches the Kafka consumer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from kafka.structs import TopicPartition

from daemon.ingest.source import Offsets, Record
from daemon.ingest.store import BatchResult, Prepared
from daemon.runtime.metrics import Metrics
from daemon.runtime.redisconn import TRANSIENT, fatal
from daemon.runtime.service import backoff_delays
from schemas.catalogue import CatalogueEvent, decode_catalogue
from schemas.events import InteractionEvent, InvalidEvent, Limits, ProfileEvent, decode_interaction, decode_profile

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # batches queued for Redis while the next is polled: keeps both sides busy


class Source(Protocol):
    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]: ...
    def commit(self, offsets: Offsets, wait: bool = True) -> None: ...
    def lag(self) -> dict[TopicPartition, int]: ...
    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    def send(self, msg: Record, reason: str, detail: str) -> None: ...
    def flush(self, timeout_s: float = 30.0) -> None: ...
    def close(self) -> None: ...


class Store(Protocol):
    def prepare(self, events: list[tuple[InteractionEvent, int]], now_ms: int) -> Prepared: ...
    def apply_prepared(self, prepared: Prepared) -> BatchResult: ...
    def apply_profiles(self, profiles: list[tuple[ProfileEvent, int]]) -> BatchResult: ...
    def apply_catalogue(self, records: list[CatalogueEvent]) -> tuple[int, int]: ...


@dataclass
class Batch:
    """A polled, decoded batch and the offsets it covers."""

    events: list[tuple[InteractionEvent, int]] = field(default_factory=list)
    prepared: Prepared | None = None  # events encoded for the script, done on the polling thread
    profiles: list[tuple[ProfileEvent, int]] = field(default_factory=list)
    catalogue: list[CatalogueEvent] = field(default_factory=list)
    offsets: Offsets = field(default_factory=dict)
    size: int = 0
    started: float = 0.0


@dataclass(frozen=True)
class IngestOptions:
    poll_timeout_ms: int  # the loop never blocks longer on the broker
    profiles_topic: str  # records of this topic are profiles
    items_topic: str  # records of this topic are catalogue events; all others interaction events
    limits: Limits  # what a valid event may be


class IngestWorker:
    """The ingest role: call ``step()`` in a loop, then ``shutdown()``."""

    def __init__(
        self,
        options: IngestOptions,
        source_factory: Callable[[Callable[[list[TopicPartition]], None]], Source],
        dead_letters: DeadLetterSink,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.limits = options.limits
        self.dead_letters = dead_letters
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.stopping = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="recd-redis")
        # Batches handed to the Redis thread, oldest first; written strictly in this order.
        self._inflight: collections.deque[tuple[Batch, Future[BatchResult]]] = collections.deque()
        self._ready: Batch | None = None
        self._uncommitted: Offsets = {}
        self._sent_async: Offsets = {}  # committed without waiting; confirmed again on drain
        self._last_lag = 0.0
        self.source = source_factory(self._on_revoked)

    # ----- the loop
    def step(self) -> int:
        """Poll once (or wait on Redis), hand a batch to Redis, commit what Redis holds."""
        self._reap(wait_s=0.0)
        polled = 0
        if self._ready is None:
            polled_batches = self.source.poll(self.options.poll_timeout_ms)
            polled = sum(len(records) for records in polled_batches.values())
            if polled:
                self._ready = self._decode(polled_batches, polled)
        elif len(self._inflight) >= MAX_IN_FLIGHT:
            self._reap(wait_s=self.options.poll_timeout_ms / 1000)
        self._submit_ready()
        self._commit()
        self._report_lag()
        return polled

    def _decode(self, polled: dict[TopicPartition, list[Record]], size: int) -> Batch:
        batch = Batch(size=size, started=time.monotonic())
        now_ms = int(self.clock() * 1000)
        types: collections.Counter[str] = collections.Counter()
        for tp, records in polled.items():
            batch.offsets[tp] = records[-1].offset + 1
            if tp.topic == self.options.profiles_topic:
                self._decode_profiles(records, batch, now_ms)
                continue
            if tp.topic == self.options.items_topic:
                self._decode_catalogue(records, batch, now_ms)
                continue
            for msg in records:
                try:
                    event = decode_interaction(msg.value or b"", self.limits, now_ms)
                except InvalidEvent as exc:
                    self._dead_letter(msg, exc)
                    continue
                batch.events.append((event, msg.timestamp))
                types[event.type] += 1
        for etype, count in types.items():
            self.metrics.events.labels(etype).inc(count)
        self.metrics.batch_size.observe(size)
        self._flush_dead_letters()
        if batch.events:
            batch.prepared = self.store.prepare(batch.events, now_ms)
        return batch

    def _decode_profiles(self, records: list[Record], batch: Batch, now_ms: int) -> None:
        for msg in records:
            try:
                batch.profiles.append((decode_profile(msg.value or b"", self.limits, now_ms), msg.timestamp))
            except InvalidEvent as exc:
                self._dead_letter(msg, exc)

    def _decode_catalogue(self, records: list[Record], batch: Batch, now_ms: int) -> None:
        for msg in records:
            try:
                batch.catalogue.append(decode_catalogue(msg.value or b"", self.limits, now_ms))
            except InvalidEvent as exc:
                self._dead_letter(msg, exc)

    def _dead_letter(self, msg: Record, exc: InvalidEvent) -> None:
        self.dead_letters.send(msg, exc.reason, exc.detail)
        self.metrics.invalid.labels(exc.reason).inc()

    def _flush_dead_letters(self) -> None:
        """Dead letters must be acknowledged before their offsets can be committed."""
        for delay in backoff_delays():
            try:
                self.dead_letters.flush()
                return
            except Exception as exc:  # broker unreachable: keep trying, commit nothing
                self.metrics.errors.labels("kafka").inc()
                log.warning("dead-letter flush failed (%s); retrying in %.1fs", exc, delay)
                if self.stopping.wait(delay):
                    raise

    def _write(self, batch: Batch) -> BatchResult:
        """Runs in the worker thread: retry until Redis holds the batch (or we are stopping). Only errors that
        may heal are retried (Redis away, a failover or resharding); any other stops the role, named."""
        for delay in backoff_delays():
            try:
                return self._write_once(batch)
            except TRANSIENT as exc:
                self.metrics.errors.labels("redis").inc()
                log.warning("redis write failed (%s); retrying in %.1fs", exc, delay)
                if self.stopping.wait(delay):
                    raise
            except Exception as exc:
                raise fatal(exc, "an ingest batch") or exc from None
        raise AssertionError("unreachable")

    def _write_once(self, batch: Batch) -> BatchResult:
        result = BatchResult()
        if batch.catalogue:
            with self.metrics.redis_seconds.labels("catalogue").time():
                applied, unchanged = self.store.apply_catalogue(batch.catalogue)
            self.metrics.catalogue.labels("applied").inc(applied)
            self.metrics.catalogue.labels("unchanged").inc(unchanged)
        if batch.profiles:
            with self.metrics.redis_seconds.labels("profiles").time():
                result = self.store.apply_profiles(batch.profiles)
            self.metrics.profiles.inc(result.applied)
        if batch.prepared is not None:
            with self.metrics.redis_seconds.labels("events").time():
                result = self.store.apply_prepared(batch.prepared)
            self.metrics.applied.inc(result.applied)
            self.metrics.duplicates.inc(result.duplicates)
            self.metrics.stale.inc(result.stale)
        return result

    def _submit_ready(self) -> None:
        if self._ready is not None and len(self._inflight) < MAX_IN_FLIGHT:
            batch, self._ready = self._ready, None
            self._inflight.append((batch, self._pool.submit(self._write, batch)))

    def _reap(self, wait_s: float) -> None:
        """Queue the offsets of finished batches for commit, in order (waits on the oldest)."""
        while self._inflight:
            batch, future = self._inflight[0]
            try:
                future.result(timeout=wait_s)
            except TimeoutError:
                return
            except Exception as exc:  # this and later batches stay uncommitted; a fault that cannot heal stops
                self._inflight.clear()
                self._ready = None  # polled after the failed batch: written now, its offsets would pass it
                if not self.stopping.is_set():
                    raise
                log.warning("batch abandoned uncommitted: %s", exc)
                return
            self._inflight.popleft()
            self._uncommitted.update(batch.offsets)
            self.metrics.batch_seconds.observe(time.monotonic() - batch.started)
            wait_s = 0.0

    def _commit(self, wait: bool = False) -> None:
        if wait:  # also confirm what went out asynchronously
            self._uncommitted = {**self._sent_async, **self._uncommitted}
        if not self._uncommitted:
            return
        try:
            self.source.commit(self._uncommitted, wait=wait)
        except Exception as exc:  # broker away or group rebalancing: redelivery is harmless
            self.metrics.errors.labels("kafka").inc()
            log.warning("commit failed (%s); will retry", exc)
            return
        self._sent_async = {} if wait else {**self._sent_async, **self._uncommitted}
        self._uncommitted = {}
        self.metrics.last_commit.set(self.clock())

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 1.0:
            return
        self._last_lag = now
        for tp, lag in self.source.lag().items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)

    def idle(self) -> bool:
        """Nothing polled is waiting for Redis or for a commit."""
        return not self._inflight and self._ready is None and not self._uncommitted

    # ----- rebalance and shutdown
    def _drain(self, timeout_s: float) -> None:
        """Finish the in-flight and ready batches and commit, within a time bound."""
        deadline = time.monotonic() + timeout_s
        while (self._inflight or self._ready) and time.monotonic() < deadline:
            self._reap(wait_s=max(0.0, min(1.0, deadline - time.monotonic())))
            self._submit_ready()
        self._commit(wait=True)

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked))
        self._drain(timeout_s=10.0)
        # Whatever is still unwritten or uncommitted will be redelivered to the new owner.
        self._ready = None
        self._uncommitted = {}
        self._sent_async = {}

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Finish the current batch, commit, close. Safe to call once, after the loop."""
        try:
            self._drain(timeout_s)
        finally:
            self.stopping.set()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.source.close()
            self.dead_letters.close()
