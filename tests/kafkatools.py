"""Small Kafka helpers for tests: produce raw messages, read a topic, read committed offsets."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition

from daemon.runtime.app import create_topics
from daemon.runtime.settings import Settings


def produce_raw(settings: Settings, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
    """(key, value) pairs, in order; returns the count."""
    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    n = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


def read_topic(settings: Settings, topic: str, expect: int, timeout_s: float = 20.0) -> list[object]:
    """Read at least ``expect`` records from the start of a topic (all partitions)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    out: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend(batch)
    consumer.close()
    return out


def committed(settings: Settings, topic: str, partitions: int = 4) -> dict[int, int | None]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
    )
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()


def committed_total(settings: Settings, topic: str, partitions: int = 4) -> int:
    """The consumer group's committed offsets of ``topic``, summed (records consumed and committed)."""
    return sum(offset or 0 for offset in committed(settings, topic, partitions).values())


def ensure_big_topics(settings: Settings, max_message_bytes: int, partitions: int = 4) -> None:
    """The source topics with ``max.message.bytes`` raised (Apache Kafka refuses larger messages; the dev
    broker does not check), then the dead-letter topics as ``ensure_topics`` makes them (default limit)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), api_version=(2, 1))
    configs = {"max.message.bytes": str(max_message_bytes)}
    try:
        for name in (settings.events_topic, settings.profiles_topic, settings.items_topic):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        admin.close()
    create_topics(settings, partitions)


def produce_to_partitions(
    settings: Settings, topic: str, messages: Iterable[tuple[int, bytes]], max_request_size: int
) -> list[tuple[int, int]]:
    """(partition, value) pairs, in order, by a producer allowed ``max_request_size``; returns each
    message's (partition, offset)."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, max_request_size=max_request_size
    )
    try:
        futures = [producer.send(topic, value=value, partition=p) for p, value in messages]
        producer.flush()
        return [(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in futures]
    finally:
        producer.close()
