"""What the freshness benchmark (bench/freshness.py) observes while its stream runs.

``Tracer`` sends the tracer events and polls their users' lists: each event's latency (send -> list
rewritten) and its stages (ingest, queue, serve); ``latency_summary`` and ``per_window`` turn them into the
result's percentiles. ``command_usec`` / ``top_commands`` read where Redis's time went (INFO commandstats),
``CpuMeter`` / ``process_ids`` the CPU cores each process of the run used (Linux /proc).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.common import process_cpu_seconds
from daemon.runtime.keys import Keys


class Tracer:
    """Send tracer events and watch the tracer users' lists change.

    Each poll also asks where the pending users are in the changed-users queue, so each latency splits
    into stages: ingest (send -> the user queued as changed), queue (-> claimed by a serve worker) and
    serve (-> list written). A stage shorter than the 3 ms poll can be missed; those events count in the
    latencies but not in the stages."""

    def __init__(self, client: redis.Redis, keys: Keys, users: list[str], items: int) -> None:
        self.client, self.keys, self.users, self.items = client, keys, users, items
        # pending user -> (send time, list before, stage -> first poll time the user was seen in it)
        self.pending: dict[str, tuple[float, bytes | None, dict[str, float]]] = {}
        self.latencies: list[float] = []
        self.sent_at: list[float] = []  # send time of each measured tracer event
        self.stages: list[tuple[float, float, float]] = []  # (ingest, queue, serve) seconds
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def event(self, n: int) -> tuple[str, dict[str, Any]]:
        """The n-th tracer event: users in turn, items spread over the catalogue."""
        user = self.users[n % len(self.users)]
        return user, {
            "event_id": uuid.uuid4().hex,
            "user_id": user,
            "item_id": f"i{(n * 7919) % self.items}",
            "type": "click",
            "ts": int(time.time() * 1000),
        }

    def sent(self, user: str, at: float) -> None:
        before: Any = self.client.get(self.keys.rec(user))
        with self.lock:
            self.pending[user] = (at, before, {})

    def poll(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                users = list(self.pending)
            if users:
                pipe = self.client.pipeline(transaction=False)
                pipe.zmscore(self.keys.dirty, users)
                pipe.zmscore(self.keys.dirty_inflight, users)
                pipe.mget([self.keys.rec(u) for u in users])
                queued, claimed, raw = pipe.execute()
                now = time.time()
                with self.lock:
                    for user, q, c, value in zip(users, queued, claimed, raw, strict=True):
                        self._observe(user, q is not None, c is not None, value, now)
            time.sleep(0.003)

    def _observe(self, user: str, queued: bool, claimed: bool, value: bytes | None, now: float) -> None:
        at, before, seen = self.pending[user]
        if queued or claimed:
            seen.setdefault("queued", now)
        if claimed:
            seen.setdefault("claimed", now)
        if value is None or value == before:
            return
        self.latencies.append(now - at)
        self.sent_at.append(at)
        if "claimed" in seen:
            self.stages.append((seen["queued"] - at, seen["claimed"] - seen["queued"], now - seen["claimed"]))
        del self.pending[user]

    def stage_summary(self) -> dict[str, Any]:
        """p50/p99 ms of each stage, over the events whose stages were all seen."""
        if not self.stages:
            return {}
        ms = np.asarray(self.stages) * 1000
        out: dict[str, Any] = {
            name: {f"p{q}_ms": round(float(np.percentile(ms[:, k], q)), 1) for q in (50, 99)}
            for k, name in enumerate(("ingest", "queue", "serve"))
        }
        return {**out, "events": len(ms)}


def latency_summary(tracer: Tracer, started: float) -> dict[str, Any]:
    """The tracer events' latency percentiles, per-window p99s and stages; ``unchanged``: lists never rewritten."""
    lat = np.asarray(tracer.latencies) * 1000
    pct = {f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)} if len(lat) else {}
    return {
        "tracer_events": len(lat) + len(tracer.pending),
        "unchanged": len(tracer.pending),
        **pct,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "p99_ms_per_10s": per_window(tracer, started),
        "stages": tracer.stage_summary(),
    }


def per_window(tracer: Tracer, started: float, window_s: float = 10.0) -> list[float]:
    """p99 of the tracer events sent in each consecutive window: does latency drift as histories grow?"""
    lat, sent = np.asarray(tracer.latencies) * 1000, np.asarray(tracer.sent_at) - started
    bins = (sent // window_s).astype(np.int64) if len(sent) else np.zeros(0, np.int64)
    return [round(float(np.percentile(lat[bins == b], 99)), 1) for b in np.unique(bins[bins >= 0])]


def command_usec(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Redis's own count of (calls, microseconds) per command so far (INFO commandstats); the commands a
    script runs are counted apart as well as inside its EVALSHA."""
    info: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()}


def top_commands(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], span_s: float, top: int = 8
) -> dict[str, dict[str, float]]:
    """The ``top`` commands by Redis time between two ``command_usec`` readings: calls/s, us per call
    and the share of a core they took (any client's, this bench's poller included)."""
    rows = []
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            rows.append((usec - u0, calls - c0, name))
    rows.sort(reverse=True)
    return {
        name: {
            "calls_per_s": round(calls / span_s),
            "us_per_call": round(usec / calls, 1),
            "cores": round(usec / span_s / 1e6, 3),
        }
        for usec, calls, name in rows[:top]
    }


class CpuMeter:
    """CPU cores each process of the run used while the steady stream ran (from /proc, so Linux only; a
    process that is gone or not on this machine is left out): where the machine's CPU went."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.at, self.used = 0.0, dict[str, float]()

    def start(self) -> None:
        self.at = time.monotonic()
        self.used = {n: t for n, pid in self.pids.items() if (t := process_cpu_seconds(pid)) is not None}

    def cores(self) -> dict[str, float]:
        span = time.monotonic() - self.at
        now = {n: process_cpu_seconds(self.pids[n]) for n in self.used}
        return {n: round((t - self.used[n]) / span, 2) for n, t in now.items() if t is not None}


def process_ids(
    client: redis.Redis, broker_pid: int | None, daemons: list[subprocess.Popen[bytes]], roles: list[str]
) -> dict[str, int]:
    """The processes to meter: the daemons by role, this bench (producer and poller), the broker it
    started and Redis when it runs here."""
    pids = {f"{role}-{k}": d.pid for k, (role, d) in enumerate(zip(roles, daemons, strict=True))}
    pids["bench"] = os.getpid()
    if broker_pid is not None:
        pids["broker"] = broker_pid
    info: Any = client.info("server")
    redis_pid = int(info.get("process_id", 0))
    cmdline = Path(f"/proc/{redis_pid}/cmdline")  # a remote Redis's pid may name some other process here
    if cmdline.exists() and b"redis" in cmdline.read_bytes():
        pids["redis"] = redis_pid
    return pids
