"""The topics recd reads and writes, created when missing (``recd topics``, and the ingest role at start)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from daemon.ingest.source import client_options
from daemon.runtime.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    """The topics recd reads and writes: events, profiles and their dead-letter topics."""
    return [
        settings.events_topic,
        settings.profiles_topic,
        settings.dlq_topic,
        settings.profiles_topic + settings.dlq_suffix,
    ]


def ensure_topics(settings: Settings, partitions: int = 4) -> dict[str, bool]:
    """Create the topics recd uses if they are missing; each name -> whether it was created now."""
    admin = KafkaAdminClient(**client_options(settings), client_id=f"{settings.client_id}-admin")
    created: dict[str, bool] = {}
    try:
        for name in topic_names(settings):
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
                created[name] = True
            except TopicAlreadyExistsError:
                created[name] = False
    finally:
        admin.close()
    return created
