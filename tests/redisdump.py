"""Snapshot every key under a prefix (for before/after comparisons)."""

from __future__ import annotations

from typing import Any

import redis


def dump(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = (kind, None)
    return out
