"""Redis connections: one Redis or a Redis Cluster behind one ``Topology``, and which errors heal.

``RECD_REDIS_CLUSTER=true`` makes every client a redis-py ``RedisCluster`` (the URL names any seed node);
otherwise one ``Redis``. Commands on single keys go through ``Topology.client`` either way and redis-py
routes them. Work that must run on the node owning a slot - a batch of per-shard scripts followed by
``WAIT``, which only counts the writes of its own connection - runs on that node's plain client
(``node_of``); a single Redis is the one node of its topology. ``refresh`` re-reads the slot map after a
failover or a resharding.

Errors: ``TRANSIENT`` ones (Redis away, a failover or resharding in progress) are retried with backoff;
``FatalRedisError`` wraps the ones retrying cannot heal (CROSSSLOT, WRONGTYPE, a missing permission, a
script error) so the role stops with a message that names the cause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex

from daemon.runtime.settings import Settings

T = TypeVar("T")
MAX_NODE_THREADS = 32  # nodes written to at once by one process

log = logging.getLogger(__name__)

RedisClient = redis.Redis | redis.RedisCluster
AsyncRedisClient = aioredis.Redis | aioredis.RedisCluster

# Redis being away (down, restarting, loading its data, timing out) or a cluster moving (MOVED/ASK during a
# resharding, TRYAGAIN mid-migration, CLUSTERDOWN and READONLY around a failover): retried with backoff by the
# roles, counted in recd_errors_total, a 503 for lookups.
TRANSIENT: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.AskError,  # MovedError is one
    rex.TryAgainError,
    rex.ClusterDownError,  # MasterDownError is one
    rex.ReadOnlyError,
    rex.SlotNotCoveredError,
    rex.RedisClusterException,
    rex.OutOfMemoryError,  # heals when memory is freed; nothing is lost meanwhile
)
REDIS_OUTAGE = TRANSIENT


class ReplicasBehind(rex.TimeoutError):
    """WAIT returned before enough replicas acknowledged: nothing is committed, the batch is written again."""


FATAL_MARKERS = ("CROSSSLOT", "WRONGTYPE", "NOPERM", "NOAUTH", "WRONGPASS", "ERR user_script", "ERR Error running")


class FatalRedisError(RuntimeError):
    """A Redis error that retrying cannot heal; the message names it and what to check."""


def fatal(exc: Exception, doing: str) -> FatalRedisError | None:
    """The FatalRedisError for ``exc`` while ``doing`` something, or None when it may heal."""
    if isinstance(exc, FatalRedisError):
        return exc
    text = str(exc)
    if isinstance(exc, rex.ClusterCrossSlotError) and "CROSSSLOT" not in text:  # redis-py drops the code
        text = f"CROSSSLOT {text}"
    if isinstance(exc, rex.NoPermissionError | rex.AuthenticationError | rex.AuthorizationError):
        return FatalRedisError(f"Redis refused {doing}: {text} (check the ACL user's rights in RECD_REDIS_URL)")
    if isinstance(exc, rex.ClusterCrossSlotError) or any(marker in text for marker in FATAL_MARKERS):
        return FatalRedisError(f"Redis refused {doing} and retrying will not help: {text}")
    if isinstance(exc, TRANSIENT):
        return None
    if isinstance(exc, rex.ResponseError):
        return FatalRedisError(f"Redis refused {doing}: {text}")
    return None


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments for TLS (a rediss:// URL): the CA to verify the server, a client certificate."""
    pairs = {
        "ssl_ca_certs": settings.redis_ca_file,
        "ssl_certfile": settings.redis_cert_file,
        "ssl_keyfile": settings.redis_key_file,
    }
    return {k: v for k, v in pairs.items() if v} if settings.redis_url.startswith("rediss://") else {}


def redis_client(settings: Settings, timeout_s: float = 30.0) -> RedisClient:
    """The client of ``RECD_REDIS_URL``: a cluster client with ``RECD_REDIS_CLUSTER``."""
    options: dict[str, Any] = {"socket_connect_timeout": min(5.0, timeout_s), "socket_timeout": timeout_s}
    options.update(tls_options(settings))
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30, **options)


def async_redis_client(settings: Settings, timeout_s: float = 5.0) -> AsyncRedisClient:
    """The asyncio client of ``RECD_REDIS_URL`` (the HTTP lookups'), with the same TLS and cluster choice;
    made inside the event loop that uses it."""
    options: dict[str, Any] = {"socket_connect_timeout": min(5.0, timeout_s), "socket_timeout": timeout_s}
    options.update(tls_options(settings))
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(settings.redis_url, health_check_interval=30, **options)


def redis_check(settings: Settings) -> tuple[bool, str]:
    """(whether Redis answers, what it said): for /readyz."""
    try:
        client = redis_client(settings, timeout_s=1.0)
        if isinstance(client, redis.RedisCluster):
            info: Any = client.cluster_info()
            client.close()
            state = info.get("cluster_state") if isinstance(info, dict) else None
            return state == "ok", f"redis cluster state {state}"
        client.ping()
        client.close()
        return True, "redis answers"
    except (redis.RedisError, rex.RedisClusterException) as exc:
        return False, f"redis: {exc}"


class Topology:
    """Which Redis node owns which key, and how many replicas a write waits for there."""

    def __init__(self, client: RedisClient, wait_replicas: int) -> None:
        self.client = client
        self.wait_setting = wait_replicas  # -1: auto (1 where the primary has a replica, else 0)
        self._waits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # made on the first work for several nodes

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, redis.RedisCluster)

    def node_of(self, key: str) -> redis.Redis:
        """The plain client of the primary that owns ``key``'s slot."""
        if isinstance(self.client, redis.RedisCluster):
            return self.client.get_redis_connection(self.client.get_node_from_key(key))  # type: ignore[no-untyped-call]
        return self.client

    def primaries(self) -> list[redis.Redis]:
        """A plain client per primary."""
        if isinstance(self.client, redis.RedisCluster):
            primaries = self.client.get_primaries()  # type: ignore[no-untyped-call]  # untyped in redis-py
            return [self.client.get_redis_connection(node) for node in primaries]
        return [self.client]

    def refresh(self) -> None:
        """Re-read the slot map (after MOVED, a failover, a resharding) and the replica counts."""
        with self._lock:
            self._waits.clear()
        if isinstance(self.client, redis.RedisCluster):
            self.client.nodes_manager.initialize()

    def on_each(self, tasks: Sequence[Callable[[], T]]) -> list[T | Exception]:
        """Run one task per node at once (the first on the caller's thread) and return each one's result or
        the exception it raised, in order: several primaries then work on one batch together, and every task
        has ended when this returns."""
        if len(tasks) == 1:
            return [_outcome(tasks[0])]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_NODE_THREADS, thread_name_prefix="recd-redis-node")
            pool = self._pool
        futures = [pool.submit(_outcome, task) for task in tasks[1:]]
        return [_outcome(tasks[0]), *(f.result() for f in futures)]

    def wait_count(self, node: redis.Redis) -> int:
        """Replicas a write on ``node`` waits for: the setting, or (auto) 1 when the node has a replica."""
        if self.wait_setting >= 0:
            return self.wait_setting
        name = _name(node)
        with self._lock:
            known = self._waits.get(name)
        if known is None:
            info: Any = node.info("replication")
            known = min(1, int(info.get("connected_slaves", 0)))
            with self._lock:
                self._waits[name] = known
        return known


def _outcome(task: Callable[[], T]) -> T | Exception:
    try:
        return task()
    except Exception as exc:  # handed to the caller, who raises it
        return exc


def _name(node: redis.Redis) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
