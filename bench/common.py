"""Helpers the benchmarks share."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from daemon.runtime.settings import Settings, load_settings


def drop_prefix(client: redis.Redis | redis.RedisCluster, prefix: str) -> int:
    """Delete every key under a benchmark's own prefix (a run must not leave its data in a shared Redis); on a
    cluster, every primary's keys, one UNLINK per key (a multi-key UNLINK must stay within one slot)."""
    if isinstance(client, redis.RedisCluster):
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]  # untyped in redis-py
        return sum(_drop_on(client.get_redis_connection(node), prefix, 1) for node in primaries)
    return _drop_on(client, prefix, 10_000)


def _drop_on(client: redis.Redis, prefix: str, per_command: int) -> int:
    """``drop_prefix`` on one node, ``per_command`` keys per UNLINK, 10,000 keys per round trip."""
    dropped = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            dropped += _unlink(client, batch, per_command)
            batch = []
    return dropped + _unlink(client, batch, per_command)


def _unlink(client: redis.Redis, keys: list[bytes], per_command: int) -> int:
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(keys), per_command):
        pipe.unlink(*keys[start : start + per_command])
    return sum(int(n) for n in pipe.execute()) if keys else 0


def process_cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), or None when it is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_loop_seconds(n: int = 10_000_000) -> float:
    """Seconds a plain Python loop of ``n`` additions takes now: a gauge of how fast this machine runs at
    the moment, printed with the benchmarks' figures (``python_loop_s``, before and after the run) so runs on
    different days compare. On the 2-core dev machine: ~0.2 s when it runs fast (docs/benchmarks.md, "The
    machine")."""
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return round(time.perf_counter() - started, 3)


def isolated_settings(bootstrap: str, name: str, **overrides: Any) -> Settings:
    """Settings for one benchmark run: topics, consumer group and Redis prefix of its own (``name`` and a
    random tag), so runs never see each other's data; ``overrides`` as ``load_settings`` takes them."""
    tag = uuid.uuid4().hex[:8]
    return load_settings(
        **{
            "kafka_bootstrap": bootstrap,
            "redis_prefix": f"{name}-{tag}:",
            "events_topic": f"{name}-ev-{tag}",
            "profiles_topic": f"{name}-prof-{tag}",
            "items_topic": f"{name}-items-{tag}",
            "consumer_group": f"{name}-{tag}",
            "session_timeout_ms": 6000,
            **overrides,
        }
    )
