"""Messages that cannot be dead-lettered whole never stop the ingest loop.

Against the real broker and Redis: a message over the dead-letter producer's request size, and one over
the consumer's max_partition_fetch_bytes, each between valid events on several partitions. With stand-in
producers: what a dead letter carries, and what happens when it is refused as too large or fails for a
reason that may pass.
"""

from __future__ import annotations

import hashlib
import random
import time

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from kafka.future import Future
from kafka.record.default_records import DefaultRecordBatchBuilder
from prometheus_client import CollectorRegistry

from bench.groundtruth import replay
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.ingest.deadletters import (
    DETAIL,
    FAILED_AT_MS,
    ORIGINAL_BYTES,
    REASON,
    SHA256,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    TRUNCATED,
    DeadLetterError,
    DeadLetters,
)
from daemon.ingest.source import Message
from daemon.ingest.worker import IngestWorker
from daemon.runtime.app import build_ingest
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import dead_letter_options, keys_of
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import ConfigError, Settings, load_settings
from daemon.runtime.state import StateReader
from tests.kafkatools import committed, ensure_big_topics, produce_to_partitions, read_topic

pytestmark = [pytest.mark.integration]

PARTITIONS = 4
BASE_HEADERS = [REASON, DETAIL, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, FAILED_AT_MS]
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Apache Kafka's topic max.message.bytes default


def payload(size: int) -> bytes:
    """Bytes that differ all along, so a prefix of the wrong length or place cannot match."""
    return random.Random(size).randbytes(size)


def run_until_applied(worker: IngestWorker, reader: StateReader, events: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker.step()
        totals = reader.totals()  # summed over every shard
        if totals["applied"] + totals["duplicates"] + totals["stale"] >= events:
            break
    else:
        raise AssertionError(f"ingest did not reach {events} events: {reader.totals()}")
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        worker.step()


@pytest.mark.parametrize(
    ("size", "max_payload"),
    [
        (2_000_406, 900_000),  # over the dead-letter producer's 1 MB default request size
        (5 * 1024 * 1024 + 3, 300_000),  # over the consumer's max_partition_fetch_bytes (4 MiB) too
    ],
    ids=["2MB", "5MB"],
)
def test_an_oversized_message_is_dead_lettered_cut_and_committed_past(
    settings: Settings, rclient: RedisClient, size: int, max_payload: int
) -> None:
    settings = settings.replace(dlq_max_payload_bytes=max_payload)
    now = int(time.time() * 1000)
    events = list(synthetic_events(SyntheticSpec(users=30, items=20, seed=11, start_ms=now - 600_000), 80))
    big = payload(size)
    stream = [(k % PARTITIONS, encode(e)) for k, e in enumerate(events)]
    stream.insert(41, (1, big))  # the 11th message of partition 1, valid events around it on every partition
    ensure_big_topics(settings, max_message_bytes=size + 1024 * 1024)
    coords = produce_to_partitions(settings, settings.events_topic, stream, max_request_size=size + 1024 * 1024)

    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    reader = StateReader(Topology(rclient, -1), keys_of(settings))
    try:
        run_until_applied(worker, reader, len(events))
    finally:
        worker.shutdown()

    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold)
    assert reader.totals()["applied"] == expected.applied
    ends = {p: max(o for q, o in coords if q == p) + 1 for p in range(PARTITIONS)}
    assert committed(settings, settings.events_topic) == ends
    assert metrics.registry.get_sample_value("recd_events_invalid_total", {"reason": "oversized"}) == 1

    dead = read_topic(settings, settings.dlq_topic, 1)
    assert len(dead) == 1
    headers = dict(dead[0].headers)  # type: ignore[attr-defined]
    assert headers[REASON] == b"oversized"
    assert headers[SOURCE_TOPIC] == settings.events_topic.encode()
    assert (int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET])) == coords[41] == (1, 10)
    assert (headers[TRUNCATED], int(headers[ORIGINAL_BYTES])) == (b"1", size)
    assert headers[SHA256] == hashlib.sha256(big).hexdigest().encode()
    assert dead[0].value == big[:max_payload]  # type: ignore[attr-defined]


# ----- with a stand-in producer

Outcome = str | tuple[str, Exception]


class Producer:
    """Answers each send() with the next scripted outcome: 'ok', ('raise', exc) or ('fail', exc)."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    def send(self, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> Future:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        self.sent.append((topic, value, dict(headers)))
        if isinstance(outcome, str):
            return Future().success(None)
        how, error = outcome
        if how == "raise":
            raise error
        return Future().failure(error)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def dead_letters(producer: Producer, max_payload: int = 100) -> DeadLetters:
    return DeadLetters(
        dead_letter_options(load_settings(environ={}, dlq_max_payload_bytes=max_payload)), lambda: producer
    )


def source(value: bytes) -> Message:
    return Message("recd.events", 2, 7, 0, value)


def test_a_payload_up_to_the_cap_goes_byte_for_byte_and_a_longer_one_is_cut_and_marked() -> None:
    producer = Producer()
    dlq = dead_letters(producer, max_payload=100)
    whole, longer = payload(100), payload(101)
    dlq.send(source(whole), "invalid_json", "line 1")
    dlq.send(source(longer), "oversized", "101 bytes")
    dlq.flush()
    (topic, value, headers), (_, cut, cut_headers) = producer.sent
    assert (topic, value, list(headers)) == ("recd.events.dlq", whole, BASE_HEADERS)
    assert headers[SOURCE_PARTITION] == b"2" and headers[SOURCE_OFFSET] == b"7"
    assert cut == longer[:100]
    assert list(cut_headers) == [*BASE_HEADERS, TRUNCATED, ORIGINAL_BYTES, SHA256]
    assert cut_headers[ORIGINAL_BYTES] == b"101"
    assert cut_headers[SHA256] == hashlib.sha256(longer).hexdigest().encode()
    assert dlq.pending == []


@pytest.mark.parametrize("how", ["raise", "fail"])  # refused by the producer, or by the broker
def test_a_letter_refused_as_too_large_goes_out_as_headers_only(how: str) -> None:
    producer = Producer((how, MessageSizeTooLargeError("too large")))
    dlq = dead_letters(producer)
    raw = payload(50)
    dlq.send(source(raw), "oversized", "too big")
    dlq.flush()  # no error: nothing is retried
    assert [value for _, value, _ in producer.sent] == [raw, b""]
    headers = producer.sent[1][2]
    assert headers[REASON] == b"oversized" and headers[SOURCE_OFFSET] == b"7"
    assert (headers[TRUNCATED], headers[ORIGINAL_BYTES]) == (b"1", b"50")
    assert headers[SHA256] == hashlib.sha256(raw).hexdigest().encode()
    assert dlq.pending == []


def test_a_letter_refused_even_without_its_payload_is_dropped_not_retried_forever() -> None:
    too_large = ("fail", MessageSizeTooLargeError("too large"))
    producer = Producer(too_large, too_large)
    dlq = dead_letters(producer)
    dlq.send(source(payload(50)), "oversized", "too big")
    dlq.flush()
    assert len(producer.sent) == 2 and dlq.pending == []


@pytest.mark.parametrize("outcome", [("fail", NotLeaderForPartitionError()), ("raise", KafkaTimeoutError())])
def test_a_failure_that_may_pass_is_re_sent_whole_and_reported(outcome: Outcome) -> None:
    producer = Producer(outcome)
    dlq = dead_letters(producer)
    raw = payload(60)
    dlq.send(source(raw), "invalid_json", "x")
    with pytest.raises(DeadLetterError):
        dlq.flush()
    dlq.flush()  # the retry (IngestWorker backs off between them) is acknowledged
    assert [value for _, value, _ in producer.sent] == [raw, raw]
    assert producer.sent[0][2] == producer.sent[1][2]
    assert dlq.pending == []


def test_the_largest_dead_letter_fits_the_producer_and_a_default_topic(broker: str) -> None:
    settings = load_settings(environ={}, kafka_bootstrap=broker)  # the broker only: no Redis is involved
    headers = [
        (REASON, b"oversized"),
        (DETAIL, b"d" * 1024),
        (SOURCE_TOPIC, b"t" * 249),
        (SOURCE_PARTITION, b"2147483647"),
        (SOURCE_OFFSET, b"9" * 19),
        (FAILED_AT_MS, b"9" * 13),
        (TRUNCATED, b"1"),
        (ORIGINAL_BYTES, b"9" * 19),
        (SHA256, b"f" * 64),
    ]
    value = bytes(settings.dlq_max_payload_bytes)
    assert (
        DefaultRecordBatchBuilder.estimate_size_in_bytes(None, value, headers)
        <= dead_letter_options(settings).max_request_size
    )
    assert dead_letter_options(settings).max_request_size <= KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    dlq = DeadLetters(dead_letter_options(settings))
    try:
        assert dlq.producer.config["max_request_size"] == dead_letter_options(settings).max_request_size
    finally:
        dlq.close()


@pytest.mark.parametrize("bad", [-1, 64 * 1024 * 1024 + 1])
def test_the_payload_cap_is_validated(bad: int) -> None:
    with pytest.raises(ConfigError, match="RECD_DLQ_MAX_PAYLOAD_BYTES"):
        load_settings(environ={"RECD_DLQ_MAX_PAYLOAD_BYTES": str(bad)})
