"""Publishing events to Kafka for the demo, benchmarks and tests: synthetic streams and dataset replays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.runtime.options import kafka_options
from daemon.runtime.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **kafka_options(settings).client("producer"),
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        metrics_enabled=False,
    )


def publish(
    producer: KafkaProducer, topic: str, docs: Iterable[dict[str, Any]], progress: Progress | None = None
) -> int:
    """Send each document keyed by its user_id; flushes before returning the count."""
    sent = 0
    for doc in docs:
        producer.send(topic, key=str(doc["user_id"]).encode(), value=encode(doc))
        sent += 1
        if progress is not None and sent % 5000 == 0:
            progress(5000)
    producer.flush()
    if progress is not None:
        progress(sent % 5000)
    return sent


def publish_synthetic(
    settings: Settings, spec: SyntheticSpec, n: int, progress: Progress | None = None, profiles: bool = True
) -> tuple[int, int]:
    """Profiles for every synthetic user, then n events. Returns (profiles, events) sent."""
    producer = make_producer(settings)
    try:
        n_prof = publish(producer, settings.profiles_topic, synthetic_profiles(spec, spec.start_ms)) if profiles else 0
        n_ev = publish(producer, settings.events_topic, synthetic_events(spec, n), progress)
    finally:
        producer.close()
    return n_prof, n_ev


def dataset_events(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """A dataset's interactions as events with stable ids (replaying twice changes nothing)."""
    from trainer.datasets import iter_events

    tag = path.name
    for k, event in enumerate(iter_events(path)):
        if limit is not None and k >= limit:
            return
        yield {"event_id": f"{tag}-{k}", **event}


def publish_dataset(
    settings: Settings, path: Path, limit: int | None = None, progress: Progress | None = None
) -> tuple[int, int]:
    """Replay a dataset (formats of trainer.datasets) in time order; profiles first where it has them."""
    from trainer.datasets import iter_profiles

    producer = make_producer(settings)
    try:
        first_ts = next(iter(dataset_events(path, 1)), {}).get("ts", 0)
        profiles = ({**p, "ts": first_ts} for p in iter_profiles(path))
        n_prof = publish(producer, settings.profiles_topic, profiles)
        n_ev = publish(producer, settings.events_topic, dataset_events(path, limit), progress)
    finally:
        producer.close()
    return n_prof, n_ev
