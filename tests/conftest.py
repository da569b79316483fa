"""Shared fixtures: a real Redis, a real Redis Cluster and a real Kafka-protocol broker (Tansu).

RECD_TEST_REDIS_URL / RECD_TEST_KAFKA_BOOTSTRAP point the tests at existing servers; otherwise the Redis on
127.0.0.1:6379 is used (or a throwaway redis-server is started) and one Tansu broker is started for the
session. The Redis Cluster (3 primaries, 3 replicas, from redis-server on free loopback ports) starts the
first time a test asks for it and stops at the session's end.

Tests that use ``settings``, ``rclient``, ``topology`` or ``prefix`` run twice: against the single Redis
and against the cluster (``redis_target``); ``@pytest.mark.single_redis`` keeps a test to the single one.
Every test gets its own key prefix, topics and consumer group.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from daemon.dev.cluster import LocalCluster, start_redis_cluster
from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.runtime.keys import Keys, glob_escape
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings, load_settings

SHARDS = 16  # virtual shards of the tests' keys: several per primary, few enough to read quickly


@dataclass(frozen=True)
class RedisTarget:
    url: str
    cluster: bool

    def client(self) -> RedisClient:
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked single_redis run against the single Redis only."""
    items[:] = [
        item
        for item in items
        if not (
            item.get_closest_marker("single_redis")
            and getattr(getattr(item, "callspec", None), "params", {}).get("redis_target") == "cluster"
        )
    ]


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
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    if request.param == "cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster").url, True)
    return RedisTarget(request.getfixturevalue("redis_url"), False)


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
def rclient(redis_target: RedisTarget) -> Iterator[RedisClient]:
    client = redis_target.client()
    yield client
    client.close()


@pytest.fixture
def topology(rclient: RedisClient) -> Topology:
    return Topology(rclient, -1)


def _purge(client: RedisClient, prefix: str) -> None:
    keys = list(client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])  # the cluster client splits a delete by slot


@pytest.fixture
def prefix(rclient: RedisClient) -> Iterator[str]:
    """A Redis key prefix of this test's own, emptied before and after."""
    value = f"test:{uuid.uuid4().hex[:10]}:"
    yield value
    _purge(rclient, value)


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix, SHARDS)


def make_settings(target: RedisTarget, broker: str, prefix: str, folder: Path) -> Settings:
    """Settings with their own topics, group, prefix and model folder, on ``target``."""
    tag = uuid.uuid4().hex[:8]
    return load_settings(
        environ={},
        kafka_bootstrap=broker,
        redis_url=target.url,
        redis_cluster=target.cluster,
        redis_prefix=prefix,
        redis_shards=SHARDS,
        events_topic=f"ev-{tag}",
        profiles_topic=f"prof-{tag}",
        items_topic=f"items-{tag}",
        consumer_group=f"g-{tag}",
        session_timeout_ms=6000,
        metrics_port=0,
        model_dir=str(folder / "models"),
        search_interval_s=0,  # runs fit the configured setting; tests/test_model_search.py turns the search on
    )


@pytest.fixture
def settings(redis_target: RedisTarget, broker: str, prefix: str, tmp_path: Path) -> Settings:
    """Settings with this test's own topics, group, prefix and model folder, on this run's Redis."""
    return make_settings(redis_target, broker, prefix, tmp_path)
