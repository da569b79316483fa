"""Creating the topics recd reads and writes when they are missing (``recd topics``, and the ingest role at
start); which topics those are is ``options.topic_names``."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from daemon.ingest.source import KafkaOptions


def ensure_topics(kafka: KafkaOptions, names: Iterable[str], partitions: int = 4) -> dict[str, bool]:
    """Create each topic of ``names`` that is missing; each name -> whether it was created now."""
    admin = KafkaAdminClient(**kafka.client("admin"))
    created: dict[str, bool] = {}
    try:
        for name in names:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
                created[name] = True
            except TopicAlreadyExistsError:
                created[name] = False
    finally:
        admin.close()
    return created
