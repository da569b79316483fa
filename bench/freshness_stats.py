"""What the freshness benchmark (bench/freshness.py) observes while its stream runs.

``Tracer`` sends the tracer events and polls their users' lists: each event's latency (send -> list
rewritten) and its stages (ingest, queue, serve); ``latency_summary`` and ``per_window`` turn them into the
result's percentiles. ``command_usec`` / ``top_commands`` read where Redis's time went (INFO commandstats,
summed over the primaries), ``CpuMeter`` / ``process_ids`` the CPU cores each process of the run used (Linux
/proc), ``PhaseMeter`` all of these and the primaries' load over the stream (bench/cluster.py), and
``verify_run`` checks Redis against the reference model once the run is ingested.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.cluster import SlotLoad, compare, load_figures, primary_loads, topology_figures
from bench.common import process_cpu_seconds
from bench.groundtruth import replay
from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader


class Tracer:
    """Send tracer events and watch the tracer users' lists change.

    Each poll also asks where the pending users are in the changed-users queue, so each latency splits
    into stages: ingest (send -> the user queued as changed), queue (-> claimed by a serve worker) and
    serve (-> list written). A stage shorter than the 3 ms poll can be missed; those events count in the
    latencies but not in the stages."""

    def __init__(self, topology: Topology, keys: Keys, users: list[str], items: int) -> None:
        self.topology, self.client, self.keys = topology, topology.client, keys
        self.users, self.items = users, items
        self.events: list[dict[str, Any]] = []  # every tracer event made, for the ground truth
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
        event: dict[str, Any] = {
            "event_id": uuid.uuid4().hex,
            "user_id": user,
            "item_id": f"i{(n * 7919) % self.items}",
            "type": "click",
            "ts": int(time.time() * 1000),
        }
        self.events.append(event)
        return user, event

    def sent(self, user: str, at: float) -> None:
        before: Any = self.client.get(self.keys.rec(user))
        with self.lock:
            self.pending[user] = (at, before, {})

    def poll(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                stages = {user: set(seen) for user, (_, _, seen) in self.pending.items()}
            if stages:
                queued, claimed, raw = self._read(stages)
                now = time.time()
                with self.lock:
                    for user in stages:
                        if user in self.pending:
                            self._observe(user, user in queued, user in claimed, raw[user], now)
            time.sleep(0.003)

    def _read(self, stages: dict[str, set[str]]) -> tuple[set[str], set[str], dict[str, bytes | None]]:
        """(users in their shard's changed-user queue, users claimed, each user's list), asking each user's
        shard only about the stages not seen yet: one pipeline per node."""
        k, asks = self.keys, dict[tuple[int, bool], list[str]]()  # (shard, claimed?) -> users to ask about
        for user, seen in stages.items():
            if "claimed" in seen:
                continue
            shard = k.shard_of(user)
            if "queued" not in seen:
                asks.setdefault((shard, False), []).append(user)
            asks.setdefault((shard, True), []).append(user)
        commands = [
            ("ZMSCORE", k.dirty_inflight(shard) if inflight else k.dirty(shard), *members)
            for (shard, inflight), members in asks.items()
        ]
        commands += [("GET", k.rec(user)) for user in stages]
        replies = routed(self.topology, commands)
        queued, claimed = set[str](), set[str]()
        for ((_, inflight), members), scores in zip(asks.items(), replies, strict=False):
            for user, score in zip(members, scores, strict=True):
                if score is not None:
                    (claimed if inflight else queued).add(user)
        return queued, claimed, dict(zip(stages, replies[len(asks) :], strict=True))

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


def routed(topology: Topology, commands: list[tuple[str, ...]]) -> list[Any]:
    """Each command (name, key, args...) on the primary that owns its key, in one pipeline per node; the
    replies in order."""
    groups: dict[int, tuple[redis.Redis, list[int]]] = {}
    for position, command in enumerate(commands):
        node = topology.node_of(command[1])
        groups.setdefault(id(node), (node, []))[1].append(position)
    replies: list[Any] = [None] * len(commands)
    for node, positions in groups.values():
        pipe = node.pipeline(transaction=False)
        for position in positions:
            pipe.execute_command(*commands[position])  # type: ignore[no-untyped-call]
        for position, reply in zip(positions, pipe.execute(), strict=True):
            replies[position] = reply
    return replies


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


def command_usec(topology: Topology) -> dict[str, tuple[int, int]]:
    """Redis's own count of (calls, microseconds) per command so far (INFO commandstats), summed over the
    primaries; the commands a script runs are counted apart as well as inside its EVALSHA."""
    out: dict[str, tuple[int, int]] = {}
    for node in topology.primaries():
        info: Any = node.info("commandstats")
        for name, v in info.items():
            calls, usec = out.get(name.removeprefix("cmdstat_"), (0, 0))
            out[name.removeprefix("cmdstat_")] = (calls + int(v["calls"]), usec + int(v["usec"]))
    return out


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
    topology: Topology, broker_pid: int | None, daemons: list[subprocess.Popen[bytes]], roles: list[str]
) -> dict[str, int]:
    """The processes to meter: the daemons by role, this bench (producer and poller), the broker it
    started and the Redis primaries that run here (``redis``, or ``redis-<port>`` on a cluster; a local
    cluster's replicas are added by the caller)."""
    pids = {f"{role}-{k}": d.pid for k, (role, d) in enumerate(zip(roles, daemons, strict=True))}
    pids["bench"] = os.getpid()
    if broker_pid is not None:
        pids["broker"] = broker_pid
    for node in topology.primaries():
        info: Any = node.info("server")
        redis_pid = int(info.get("process_id", 0))
        cmdline = Path(f"/proc/{redis_pid}/cmdline")  # a remote Redis's pid may name some other process here
        if cmdline.exists() and b"redis" in cmdline.read_bytes():
            name = f"redis-{node.connection_pool.connection_kwargs.get('port')}" if topology.cluster else "redis"
            pids[name] = redis_pid
    return pids


class PhaseMeter:
    """What the measured phase cost: each process's CPU cores, Redis's top commands, the events ingested
    meanwhile and the primaries' load (CPU per event, write shares: bench/cluster.py)."""

    def __init__(self, topology: Topology, reader: StateReader, pids: dict[str, int]) -> None:
        self.topology, self.reader, self.cpu = topology, reader, CpuMeter(pids)
        self.at, self.handled = 0.0, 0
        self.commands: dict[str, tuple[int, int]] = {}
        self.loads: dict[str, Any] = {}

    def _handled(self) -> int:
        totals = self.reader.totals()
        return totals["applied"] + totals["duplicates"] + totals["stale"]

    def start(self) -> None:
        self.cpu.start()
        self.at, self.handled = time.time(), self._handled()
        self.commands, self.loads = command_usec(self.topology), primary_loads(self.topology)

    def stop(self) -> dict[str, Any]:
        """``cpu_cores``, ``redis_commands``, ``events_per_s`` and the load figures since ``start``."""
        span, cores = time.time() - self.at, self.cpu.cores()
        events = self._handled() - self.handled
        return {
            "cpu_cores": {**cores, "total": round(sum(cores.values()), 2)},
            "redis_commands": top_commands(self.commands, command_usec(self.topology), span),
            "events_per_s": round(events / span),
            **load_figures(self.loads, primary_loads(self.topology), events),
        }


def verify_run(
    settings: Settings, reader: StateReader, warm: Iterable[dict[str, Any]], measured: list[dict[str, Any]]
) -> dict[str, Any]:
    """Redis against the reference model of the warm-up then the measured events (each user's in the order
    sent), and the measured events' write units by slot: one in the user's shard slot, one list write in the
    ``rec:`` key's slot (an upper bound: a change is served at most once), items new since the warm-up."""
    warm_items: set[str] = set()

    def warm_up() -> Iterator[dict[str, Any]]:
        for event in warm:
            warm_items.add(event["item_id"])
            yield event

    expected = replay(
        chain(warm_up(), measured), settings.history_len, settings.event_weights, settings.rating_threshold
    )
    load = SlotLoad(reader.keys)
    load.events((e["user_id"] for e in measured), lists=True)
    load.new_items(len({e["item_id"] for e in measured} - warm_items))
    figures = compare(reader, expected)
    return {**figures, **load.figures(reader.topology), **topology_figures(reader.topology, reader.keys)}
