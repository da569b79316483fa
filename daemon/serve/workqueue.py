"""The changed-user queues between ingest and serving, one per virtual shard, with leases.

Ingest adds a user to their shard's ``dirty`` queue (score: message time of the earliest unserved change).
A serving worker claims users atomically, shard by shard (``claim.lua``), moving them to the shard's
``dirty:inflight`` with a lease; it acknowledges after their lists are written. A worker that dies leaves
leases that expire and return the users to ``dirty``, so several serving replicas share the queues and none
loses work. A user changed again while one worker holds it stays queued until that worker acknowledges: a
second worker serving the newer history at the same time could finish first and have its list overwritten
by the older one.

A step claims from the shards with the most users waiting (each claim reports how many stay queued) and
from shards not asked lately, at most ``n / MIN_PER_SHARD`` shards a step, in one pipeline per node; a shard
found empty is asked again after a back-off that doubles up to ``IDLE_MAX_S``, so an idle worker costs Redis
little and a change waits at most that long for its shard's next claim.
"""

from __future__ import annotations

import random
import time
from typing import NamedTuple

from daemon.runtime.keys import Keys, text
from daemon.runtime.redisconn import Topology
from daemon.runtime.scripts import Call, Script, run
from daemon.runtime.state import StateReader, each_shard
from daemon.serve.wire import RoutedCommands

IDLE_FIRST_S = 0.01  # an empty shard is claimed from again after this...
IDLE_MAX_S = 0.2  # ...doubling up to this
MIN_PER_SHARD = 16  # a step asks at most n / this many shards (fewer, larger claims cost Redis less)


class Claim(NamedTuple):
    """One claimed user (a tuple: a serve step builds ~1,000 a step, and a frozen dataclass cost 3x as much)."""

    user_id: str
    score: float  # message ms of the earliest unserved change, or -(last activity ms) for a swap refresh
    swap: bool
    history: bytes | None = None  # the packed history, read after the claim (``claim(with_history=True)``)


class WorkQueue:
    def __init__(self, topology: Topology, keys: Keys, lease_ms: int = 30_000) -> None:
        self.topology = topology
        self.keys = keys
        self.lease_ms = lease_ms
        self.reader = StateReader(topology, keys)
        self._claim = Script.load("daemon.serve", "claim.lua")
        self._refresh = Script.load("daemon.serve", "refresh.lua")
        self._due = [0.0] * keys.shards  # monotonic time each shard is next asked
        self._idle = [IDLE_FIRST_S] * keys.shards
        self._backlog = [0] * keys.shards  # users each shard still held at its last claim
        self._start = random.randrange(keys.shards)  # workers start their rounds at different shards

    def claim(self, n: int, now_ms: int, with_history: bool = False) -> list[Claim]:
        """Up to n users (a few more when n does not divide among the shards asked), fresh changes first in
        each shard; ``with_history`` reads their histories too."""
        now = time.monotonic()
        due = [s for s in self._order() if self._due[s] <= now]
        if not due:
            return []
        shards = self._choose(due, max(1, n // MIN_PER_SHARD))
        per_shard = -(-n // len(shards))  # at most n (and a few) in all
        k = self.keys
        calls = [
            Call(self._claim, [k.dirty(s), k.dirty_inflight(s), k.swap_queue(s)], [per_shard, now_ms, self.lease_ms])
            for s in shards
        ]
        claims: list[Claim] = []
        for shard, reply in zip(shards, run(self.topology, calls, wait=False), strict=True):
            self._backlog[shard], flat = int(reply[0]), reply[1:]
            self._pace(shard, bool(flat) or self._backlog[shard] > 0, now)
            claims += [
                Claim(text(u), float(s), w == 1) for u, s, w in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
            ]
        if with_history and claims:
            blobs = self.reader.history_blobs([c.user_id for c in claims])
            claims = [c._replace(history=b) for c, b in zip(claims, blobs, strict=True)]
        return claims

    def _choose(self, due: list[int], most: int) -> list[int]:
        """Half of ``most`` shards with the longest queues, the rest in this worker's rotation: deep queues
        drain in large claims, and no shard waits behind them for long."""
        deepest = sorted(due, key=lambda s: -self._backlog[s])[: most // 2]
        taken = set(deepest)
        rotation = [s for s in due if s not in taken][: most - len(deepest)]
        if rotation:  # the next step's rotation goes on after these: every shard is asked within a round
            self._start = (rotation[-1] + 1) % self.keys.shards
        return deepest + rotation

    def _order(self) -> list[int]:
        """Every shard, starting where this worker's last rotation left off."""
        return [(self._start + s) % self.keys.shards for s in range(self.keys.shards)]

    def _pace(self, shard: int, found: bool, now: float) -> None:
        """A shard with work is asked again at once; an empty one after a back-off that doubles."""
        if found:
            self._idle[shard] = IDLE_FIRST_S
            self._due[shard] = now
            return
        self._due[shard] = now + self._idle[shard]
        self._idle[shard] = min(IDLE_MAX_S, 2 * self._idle[shard])

    def ack(self, commands: RoutedCommands, user_ids: list[str]) -> None:
        """Add the acknowledgement to ``commands`` (sent with the lists it acknowledges)."""
        by_shard: dict[int, list[str]] = {}
        for user in user_ids:
            by_shard.setdefault(self.keys.shard_of(user), []).append(user)
        for shard, users in by_shard.items():
            key = self.keys.dirty_inflight(shard)
            commands.for_key(key).add("ZREM", key, *users)

    def mark(self, user_ids: list[str], now_ms: int) -> None:
        """Queue ``user_ids`` for a fresh list as if they had just changed (kept where already queued)."""
        commands = RoutedCommands(self.topology)
        by_shard: dict[int, list[str | int]] = {}
        for user in user_ids:
            by_shard.setdefault(self.keys.shard_of(user), []).extend((now_ms, user))
        for shard, members in by_shard.items():
            key = self.keys.dirty(shard)
            commands.for_key(key).add("ZADD", key, "NX", *members)
        commands.send()

    def depth(self) -> int:
        """Users waiting for a fresh list, over every shard."""
        return sum(int(n) for n in each_shard(self.topology, self.keys, lambda p, s: p.zcard(self.keys.dirty(s))))

    def enqueue_refresh(self, version: str, since_ms: int, limit: int = 1_000_000) -> int:
        """After a swap to model ``version``: queue the users served since ``since_ms`` (wall time), most recent
        first, once per version across replicas and restarts (a replica that starts on the current model finds
        it marked). Returns how many were queued."""
        if text(self.topology.client.get(self.keys.model_refreshed) or b"") == version:
            return 0
        queued = self.queue_refresh(since_ms, limit)
        self.topology.client.set(self.keys.model_refreshed, version)  # after the queues hold them
        return queued

    def queue_refresh(self, since_ms: int, limit: int = 1_000_000) -> int:
        """Queue the users served since ``since_ms`` (wall time) for a list rewrite, most recent first (also
        ``recd refresh-lists``, after ops excluded items). Returns how many were queued."""
        k, per_shard = self.keys, max(1, limit // self.keys.shards)
        calls = [Call(self._refresh, [k.active(s), k.swap_queue(s)], [since_ms, per_shard]) for s in range(k.shards)]
        return sum(int(r) for r in run(self.topology, calls, wait=False))

    def reset_pacing(self) -> None:
        """Ask every shard at the next claim (after a swap queued refreshes everywhere)."""
        self._due = [0.0] * self.keys.shards
        self._idle = [IDLE_FIRST_S] * self.keys.shards
