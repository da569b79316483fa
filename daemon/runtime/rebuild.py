"""``recd rebuild``: Redis state is derived from Kafka, so it can be made again from the topics.

A consumer group of its own reads the profiles and catalogue topics, then all three topics, from the
earliest retained offset (or from a time) into the configured Redis - under the daemon's prefix, or a new
one to switch over to - with recd's ingest path: the same scripts, so whatever is already there changes
nothing (a replay is idempotent) and a rebuild beside a running daemon is harmless. It stops once it has
caught up with every partition. Messages the daemon dead-lettered are counted again, not sent to the
dead-letter topic a second time.

Profiles go first so that every event finds its user's profile: segment popularity is counted at each
user's segment as the profiles topic ends (the live daemon counts an event at the segment its user had
when the event was applied, so the two differ where a profile changed or arrived after the user's events).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from daemon.ingest.source import KafkaSource, Record, SourceOptions
from daemon.ingest.store import RedisStore
from daemon.ingest.worker import IngestWorker
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import ingest_options, keys_of, source_options, store_options, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader, check_layout

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


@dataclass
class CountedDeadLetters:
    """Counts refused messages by reason instead of sending them again (the daemon sent them already)."""

    reasons: dict[str, int] = field(default_factory=dict)

    def send(self, msg: Record, reason: str, detail: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def flush(self, timeout_s: float = 30.0) -> None:
        return

    def close(self) -> None:
        return


def rebuild(settings: Settings, prefix: str | None = None, start_ms: int | None = None) -> dict[str, Any]:
    """Replay the topics into Redis until caught up; returns what was done (for the command to print)."""
    target = settings.replace(redis_prefix=prefix or settings.redis_prefix)
    group = f"{settings.consumer_group}.rebuild.{target.redis_prefix.rstrip(':')}.{start_ms or 0}"
    target = target.replace(consumer_group=group)
    topology, keys = topology_of(target), keys_of(target)
    check_layout(topology, keys)
    dead = CountedDeadLetters()
    store = RedisStore(topology, keys, store_options(target))
    metrics = Metrics(CollectorRegistry())
    started = time.monotonic()
    first = (target.profiles_topic, target.items_topic)
    for topics in (first, (target.events_topic, *first)):
        source = dataclasses.replace(source_options(target), topics=topics, start_ms=start_ms)
        worker = IngestWorker(ingest_options(target), _source_factory(source), dead, store, metrics)
        try:
            _run_until_caught_up(worker, metrics)
        finally:
            worker.shutdown()
    if target.redis_prefix != settings.redis_prefix:
        _copy_model_pointer(settings, target)
    totals = StateReader(topology, keys).totals()
    seconds = time.monotonic() - started
    return {
        "prefix": target.redis_prefix,
        "group": group,
        "seconds": round(seconds, 1),
        "totals": totals,
        "events_read": int(metrics.applied._value.get() + metrics.duplicates._value.get() + metrics.stale._value.get()),
        "dead_letters": dead.reasons,
    }


def _source_factory(options: SourceOptions) -> Callable[[Callable[[list[TopicPartition]], None]], KafkaSource]:
    """What IngestWorker calls to make its source (it passes its rebalance callback)."""
    return lambda revoked: KafkaSource(options, revoked)


def _run_until_caught_up(worker: IngestWorker, metrics: Metrics) -> None:
    """Step until every assigned partition has no lag and nothing is in flight, logging progress."""
    last_log, first_lag = 0.0, None
    started = time.monotonic()
    while True:
        worker.step()
        lag = worker.source.lag()
        source = worker.source
        caught_up = isinstance(source, KafkaSource) and source.caught_up() and worker.idle()
        now = time.monotonic()
        if caught_up or now - last_log >= PROGRESS_EVERY_S:
            behind = sum(lag.values())
            first_lag = behind if first_lag is None and lag else first_lag
            _log_progress(metrics, behind, first_lag, now - started)
            last_log = now
        if caught_up:
            return


def _events_read(metrics: Metrics) -> int:
    """Events the rebuild has handled: applied, or found already there (duplicates, stale)."""
    names = ("recd_events_applied_total", "recd_events_duplicate_total", "recd_events_stale_total")
    return int(sum(metrics.registry.get_sample_value(name) or 0.0 for name in names))


def _log_progress(metrics: Metrics, behind: int, first_lag: int | None, elapsed: float) -> None:
    applied = _events_read(metrics)
    rate = applied / elapsed if elapsed > 0 else 0.0
    eta = f", ~{behind / rate:.0f}s to go" if rate > 0 and behind else ""
    log.info("rebuild: %d events read (%.0f/s), %d behind%s", applied, rate, behind, eta)


def _copy_model_pointer(settings: Settings, target: Settings) -> None:
    """Serving under the new prefix starts with the model the old one serves (until the trainer publishes)."""
    old, new = keys_of(settings), keys_of(target)
    client = topology_of(target).client
    pointer = client.get(old.model_current)
    if pointer is not None:
        client.set(new.model_current, pointer, nx=True)
