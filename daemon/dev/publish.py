"""Publishing events to Kafka for the demo, benchmarks and tests: synthetic streams and dataset replays.

Both publish, in this order: user profiles, item catalogue records (the items topic, key = item_id), then the
interaction events, so an item's attributes are on the broker before its first event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from kafka import KafkaProducer

from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_catalogue, synthetic_events, synthetic_profiles
from daemon.runtime.options import kafka_options, limits
from daemon.runtime.settings import Settings
from schemas.catalogue import MAX_FIELDS, MAX_NAME_CHARS, MAX_VALUES_PER_FIELD, MAX_VALUES_PER_ITEM, CatalogueEvent
from schemas.events import Limits

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class Published(NamedTuple):
    """Messages one replay sent, per topic."""

    profiles: int
    events: int
    catalogue: int


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


def publish_catalogue(producer: KafkaProducer, topic: str, records: Iterable[CatalogueEvent]) -> int:
    """Send each catalogue record keyed by its item_id; flushes before returning the count."""
    sent = 0
    for record in records:
        producer.send(topic, key=record.item_id.encode(), value=record.to_json())
        sent += 1
    producer.flush()
    return sent


def publish_synthetic(
    settings: Settings,
    spec: SyntheticSpec,
    n: int,
    progress: Progress | None = None,
    profiles: bool = True,
    catalogue: bool = True,
) -> Published:
    """Profiles of every synthetic user and catalogue records of every synthetic item (both at
    ``spec.start_ms``), then n events."""
    producer = make_producer(settings)
    try:
        n_prof = publish(producer, settings.profiles_topic, synthetic_profiles(spec, spec.start_ms)) if profiles else 0
        records = synthetic_catalogue(spec, spec.start_ms) if catalogue else ()
        n_cat = publish_catalogue(producer, settings.items_topic, records)
        n_ev = publish(producer, settings.events_topic, synthetic_events(spec, n), progress)
    finally:
        producer.close()
    return Published(n_prof, n_ev, n_cat)


def dataset_events(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """A dataset's interactions as events with stable ids (replaying twice changes nothing)."""
    from trainer.datasets import iter_events

    tag = path.name
    for k, event in enumerate(iter_events(path)):
        if limit is not None and k >= limit:
            return
        yield {"event_id": f"{tag}-{k}", **event}


def _fits(name: str) -> bool:
    return bool(name) and len(name) <= MAX_NAME_CHARS


def bounded_attributes(attributes: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Attributes cut to the catalogue contract's bounds (schemas/catalogue.py), fields sorted by name.

    Names are stripped; a blank one, one longer than ``MAX_NAME_CHARS`` and a field name starting with ``_``
    (reserved) are dropped, never truncated (a cut name could merge two values, as in trainer/attributes.py).
    Of what is left, in the order given: the first ``MAX_VALUES_PER_FIELD`` distinct values of a field, the
    first ``MAX_FIELDS`` fields and the first ``MAX_VALUES_PER_ITEM`` values of the item are kept.
    """
    out: dict[str, tuple[str, ...]] = {}
    room = MAX_VALUES_PER_ITEM
    for raw_field, raw_values in attributes.items():
        field = raw_field.strip()
        if not _fits(field) or field.startswith("_") or (field not in out and len(out) == MAX_FIELDS):
            continue
        have = out.get(field, ())
        values = tuple(dict.fromkeys(v for v in (str(v).strip() for v in raw_values) if _fits(v) and v not in have))
        values = values[: min(MAX_VALUES_PER_FIELD - len(have), room)]
        if values:
            out[field] = have + values
            room -= len(values)
    return dict(sorted(out.items()))


def catalogue_record(item_id: str, attributes: Mapping[str, Sequence[str]], ts: int, bounds: Limits) -> CatalogueEvent:
    """An available item's record within every bound the decoder checks: attributes as ``bounded_attributes``
    leaves them, then the last values dropped until the message fits ``bounds.max_bytes``; ``ts`` no earlier
    than ``bounds.min_ts_ms``. Raises ValueError for an item id the contract refuses (blank, too long)."""
    if not item_id.strip() or len(item_id) > bounds.max_id_len:
        raise ValueError(f"item id {item_id[:40]!r} is blank or longer than {bounds.max_id_len} chars")
    record = CatalogueEvent(item_id, bounded_attributes(attributes), True, max(ts, bounds.min_ts_ms))
    while len(record.to_json()) > bounds.max_bytes and record.attributes:
        *rest, (field, values) = record.attributes.items()
        smaller = dict(rest) | ({field: values[:-1]} if len(values) > 1 else {})
        record = record._replace(attributes=smaller)
    return record


def dataset_catalogue(path: Path, ts: int, bounds: Limits) -> Iterator[CatalogueEvent]:
    """A record per item with metadata that ``trainer.dataset_attributes`` reads (items without interactions
    included), in the reader's order; nothing for a dataset without such metadata. Items whose attributes are
    all out of bounds, and ids the contract refuses, are left out (their events would be refused too)."""
    from trainer.dataset_attributes import load_attributes

    found = load_attributes(path)
    for item_id, attributes in (found.to_mapping() if found is not None else {}).items():
        try:
            record = catalogue_record(item_id, attributes, ts, bounds)
        except ValueError:
            log.warning("catalogue: item id %r is not a valid id; not published", item_id[:40])
            continue
        if record.attributes:
            yield record


def publish_dataset(
    settings: Settings, path: Path, limit: int | None = None, progress: Progress | None = None, catalogue: bool = True
) -> Published:
    """Replay a dataset (formats of trainer.datasets) in time order: its profiles and its whole item catalogue
    (``dataset_catalogue``, whatever ``limit``), then at most ``limit`` events. Profiles and catalogue records
    carry the time of the dataset's first event, so replaying a dataset again sends the same bytes."""
    from trainer.datasets import iter_profiles

    producer = make_producer(settings)
    try:
        first_ts = next(iter(dataset_events(path, 1)), {}).get("ts", 0)
        profiles = ({**p, "ts": first_ts} for p in iter_profiles(path))
        n_prof = publish(producer, settings.profiles_topic, profiles)
        records = dataset_catalogue(path, first_ts, limits(settings)) if catalogue else ()
        n_cat = publish_catalogue(producer, settings.items_topic, records)
        n_ev = publish(producer, settings.events_topic, dataset_events(path, limit), progress)
    finally:
        producer.close()
    return Published(n_prof, n_ev, n_cat)
