"""Snapshot every key under a prefix (for before/after comparisons), on one Redis or a whole cluster."""

from __future__ import annotations

from typing import Any

from daemon.runtime.keys import glob_escape
from daemon.runtime.redisconn import RedisClient


def dump(client: RedisClient, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` (the cluster client scans every primary) -> its value."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = client.smembers(key)
        elif kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        else:
            out[key] = (kind, None)
    return out
