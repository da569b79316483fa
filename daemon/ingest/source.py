"""The Kafka source of ingest (kafka-python), used by one thread only.

Offsets are committed explicitly, after Redis holds a batch's effects. Lag is
computed from ``consumer.highwater()`` (from fetch responses), never from
``end_offsets`` (wrong on the dev broker, see the README).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)


class Record(Protocol):
    """What ingest reads of a consumed message (kafka-python's ConsumerRecord has these)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A Record made by hand (tests, in-memory sources)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes | None


Offsets = dict[TopicPartition, int]  # next offset to read, per partition


@dataclass(frozen=True)
class KafkaOptions:
    """What every Kafka client of recd is given: the brokers, the security settings, a client id prefix."""

    bootstrap: tuple[str, ...]
    security: Mapping[str, Any]  # kafka-python keyword arguments (security_protocol, sasl_*, ssl_*)
    client_id: str

    def client(self, role: str) -> dict[str, Any]:
        """kafka-python keyword arguments for a client of ``role`` (ingest, dlq, admin, producer)."""
        return {"bootstrap_servers": list(self.bootstrap), "client_id": f"{self.client_id}-{role}", **self.security}


@dataclass(frozen=True)
class SourceOptions:
    kafka: KafkaOptions
    topics: tuple[str, ...]  # events, profiles, catalogue
    group: str
    poll_max_records: int
    session_timeout_ms: int
    start_ms: int | None  # a group with no committed offset starts here (message time), not at the earliest


def _log_commit_failure(_offsets: object, response: object) -> None:
    if isinstance(response, Exception):
        log.warning("asynchronous commit failed (the batch will be redelivered): %s", response)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, on_revoked: Callable[[list[TopicPartition]], None], on_assigned: Callable[[list[TopicPartition]], None]
    ) -> None:
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self.on_assigned(list(assigned))


class KafkaSource:
    """A consumer-group member on the events, profiles and catalogue topics."""

    def __init__(self, options: SourceOptions, on_revoked: Callable[[list[TopicPartition]], None]) -> None:
        self.consumer = KafkaConsumer(
            **options.kafka.client("ingest"),
            group_id=options.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=options.poll_max_records,
            session_timeout_ms=options.session_timeout_ms,
            heartbeat_interval_ms=max(1000, options.session_timeout_ms // 3),
            # A larger message still comes, whole, as a fetch's first batch (fetch v3+, KIP-74): it is
            # dead-lettered as oversized and never wedges the partition (tests/test_deadletters.py, 5 MB).
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,
            metrics_enabled=False,
        )
        self.start_ms = options.start_ms
        self.consumer.subscribe(list(options.topics), listener=_Listener(on_revoked, self._start_at_time))

    def _start_at_time(self, assigned: list[TopicPartition]) -> None:
        """With ``start_ms``: partitions this group never committed start at the first message at or after it."""
        if self.start_ms is None:
            return
        fresh = [tp for tp in assigned if self.consumer.committed(tp) is None]
        found = self.consumer.offsets_for_times({tp: self.start_ms for tp in fresh}) if fresh else {}
        for tp, at in found.items():
            if at is not None:
                self.consumer.seek(tp, at.offset)

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        """Records per partition, in offset order (empty after the timeout)."""
        batches: dict[TopicPartition, list[Record]] = self.consumer.poll(timeout_ms=timeout_ms)
        return batches

    def commit(self, offsets: Offsets, wait: bool = True) -> None:
        """Commit offsets; ``wait=False`` sends the commit without waiting for the answer (a lost
        asynchronous commit only means a harmless redelivery)."""
        if not offsets:
            return
        request = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        if wait:
            self.consumer.commit(request)
        else:
            self.consumer.commit_async(request, callback=_log_commit_failure)

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: high watermark - position (unknown partitions left out)."""
        out: dict[TopicPartition, int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                out[tp] = max(0, high - self.consumer.position(tp, timeout_ms=100))
            except Exception:  # position unknown right after a rebalance
                continue
        return out

    def caught_up(self) -> bool:
        """Every assigned partition's position is at its high watermark (known from a fetch)."""
        assigned = self.consumer.assignment()
        lag = self.lag()
        return bool(assigned) and set(lag) == set(assigned) and not any(lag.values())

    def close(self) -> None:
        self.consumer.close(autocommit=False)
