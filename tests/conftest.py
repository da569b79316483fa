"""Shared fixtures: a real Redis and a real Kafka-protocol broker (Tansu).

RECD_TEST_REDIS_URL / RECD_TEST_KAFKA_BOOTSTRAP point the tests at existing
servers; otherwise the Redis on 127.0.0.1:6379 is used (or a throwaway
redis-server is started) and one Tansu broker is started for the session.
Every test gets its own key prefix, topics and consumer group.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.runtime.settings import Settings, load_settings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("RECD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.address
    finally:
        server.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("RECD_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    proc: LocalProcess = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield proc.address
    finally:
        proc.stop()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _purge(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def prefix(rclient: redis.Redis) -> Iterator[str]:
    """A Redis key prefix of this test's own, emptied before and after."""
    value = f"test:{uuid.uuid4().hex[:10]}:"
    yield value
    _purge(rclient, value)


@pytest.fixture
def settings(redis_url: str, broker: str, prefix: str, tmp_path: Path) -> Settings:
    """Settings with this test's own topics, group, prefix and model folder."""
    tag = uuid.uuid4().hex[:8]
    return load_settings(
        environ={},
        kafka_bootstrap=broker,
        redis_url=redis_url,
        redis_prefix=prefix,
        events_topic=f"ev-{tag}",
        profiles_topic=f"prof-{tag}",
        consumer_group=f"g-{tag}",
        session_timeout_ms=6000,
        metrics_port=0,
        model_dir=str(tmp_path / "models"),
    )
