"""Helpers the benchmarks share."""

from __future__ import annotations

import os
from pathlib import Path

import redis


def drop_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under a benchmark's own prefix (a run must not leave its data in a shared Redis)."""
    dropped = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            dropped += int(client.unlink(*batch))  # type: ignore[arg-type]
            batch = []
    if batch:
        dropped += int(client.unlink(*batch))  # type: ignore[arg-type]
    return dropped


def process_cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), or None when it is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
