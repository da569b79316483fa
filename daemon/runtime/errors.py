"""What a failed command tells its user: one line naming the cause, and an exit code."""

from __future__ import annotations

import re

import redis
from kafka import errors as kafka_errors
from redis.exceptions import RedisClusterException

from daemon.dev.embedded import EmbeddedError
from daemon.runtime.redisconn import FatalRedisError
from daemon.runtime.settings import ConfigError, Settings
from trainer.snapshot import ModelStoreError

# kafka-python 2.x raises NoBrokersAvailable where 3.x raises KafkaTimeoutError ("Unable to bootstrap").
BROKER_AWAY: tuple[type[Exception], ...] = tuple(
    getattr(kafka_errors, name)
    for name in ("NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError")
    if hasattr(kafka_errors, name)
)
# Errors whose message already says what is wrong and what to do.
PLAIN = (ModelStoreError, EmbeddedError, FileNotFoundError, NotADirectoryError, PermissionError)


class StartupError(RuntimeError):
    """The daemon cannot start (a dependency never answered); the message names it."""


def redact(url: str) -> str:
    """A URL with its password replaced by '***'."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def describe_error(exc: BaseException, settings: Settings | None) -> tuple[str, int]:
    """(one line for stderr, exit code) for an error that ended a command."""
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}", 2
    if isinstance(exc, FatalRedisError):
        return str(exc), 1
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | RedisClusterException):
        where = f" at {redact(settings.redis_url)}" if settings else ""
        return f"cannot reach Redis{where}: {exc}", 1
    if isinstance(exc, redis.RedisError):
        return f"Redis refused the command: {exc}", 1
    if isinstance(exc, BROKER_AWAY):
        where = f" at {settings.kafka_bootstrap}" if settings else ""
        return f"cannot reach the Kafka broker{where} ({exc}): start one, or `recd dev up` for a local one", 1
    if isinstance(exc, (*PLAIN, StartupError)):
        return str(exc), 1
    return f"{type(exc).__name__}: {exc} (RECD_LOG_LEVEL=DEBUG logs the traceback)", 1
