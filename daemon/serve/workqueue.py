"""The changed-user queue between ingest and serving, with leases.

Ingest adds a user to ``dirty`` (score: message time of the earliest unserved
change). A serving worker claims users atomically, moving them to
``dirty:inflight`` with a lease; it acknowledges after their lists are written.
A worker that dies leaves leases that expire and return the users to
``dirty``, so several serving replicas share the queue and none loses work.
A user changed again while one worker holds it stays queued until that worker
acknowledges: a second worker serving the newer history at the same time could
finish first and have its list overwritten by the older one.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, NamedTuple

import redis

from daemon.runtime.keys import Keys, text
from daemon.serve.wire import Commands


class Claim(NamedTuple):
    """One claimed user (a tuple: a serve step builds ~1,000 a step, and a frozen dataclass cost 3x as much)."""

    user_id: str
    score: float  # message ms of the earliest unserved change, or -(last activity ms) for a swap refresh
    swap: bool
    history: bytes | None = None  # the packed history, read with the claim (``claim(with_history=True)``)


class WorkQueue:
    def __init__(self, client: redis.Redis, keys: Keys, lease_ms: int = 30_000) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self._claim = client.register_script(resources.files("daemon.serve").joinpath("claim.lua").read_text())

    def claim(self, n: int, now_ms: int, with_history: bool = False) -> list[Claim]:
        """Up to n users, fresh changes first; ``with_history`` reads their histories in the same call."""
        keys = [self.keys.dirty, self.keys.dirty_inflight, self.keys.swap_queue]
        args: list[Any] = [n, now_ms, self.lease_ms]
        if with_history:
            args += self.keys.history("\0").split("\0")  # the key around the user id
        flat: Any = self._claim(keys=keys, args=args)
        stride = 4 if with_history else 3
        users = flat[::stride]
        histories = flat[3::4] if with_history else [None] * len(users)
        return [
            Claim(text(u), float(s), w == 1, h)
            for u, s, w, h in zip(users, flat[1::stride], flat[2::stride], histories, strict=True)
        ]

    def ack(self, commands: Commands, user_ids: list[str]) -> None:
        """Add the acknowledgement to ``commands`` (sent with the lists it acknowledges)."""
        if user_ids:
            commands.add("ZREM", self.keys.dirty_inflight, *user_ids)

    def depth(self) -> int:
        return int(self.client.zcard(self.keys.dirty))  # type: ignore[arg-type]

    def enqueue_refresh(self, version: str, since_ms: int, limit: int = 1_000_000) -> int:
        """After a swap to model ``version``: queue the users served since ``since_ms`` (wall time), most recent
        first, once per version across replicas and restarts (a replica that starts on the current model finds
        it marked). Returns how many were queued."""
        if text(self.client.get(self.keys.model_refreshed) or b"") == version:
            return 0
        reply: Any = self.client.zrevrangebyscore(
            self.keys.active, "+inf", since_ms, start=0, num=limit, withscores=True
        )
        if reply:
            self.client.zadd(self.keys.swap_queue, {text(u): -float(s) for u, s in reply})
        self.client.set(self.keys.model_refreshed, version)  # after the queue holds them: a crash re-queues
        return len(reply)
