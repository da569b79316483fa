"""Redis connections: the client every role uses, its health check, and which errors mean "Redis is away"."""

from __future__ import annotations

import redis

from daemon.runtime.settings import Settings

# Redis being away (down, restarting, loading its data, timing out): retried with backoff by the roles, a 503
# for lookups. Every other Redis error is a fault that retrying will not heal.
REDIS_OUTAGE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
    )


def redis_check(settings: Settings) -> tuple[bool, str]:
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        return True, "redis answers"
    except redis.RedisError as exc:
        return False, f"redis: {exc}"
