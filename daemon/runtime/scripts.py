"""Running Lua scripts on the nodes that own their keys: per node one pipeline, then ``WAIT``.

Every call names its keys (all in one slot); calls are grouped by the primary that owns the slot, sent in
one pipeline per node (every node's at once, from a thread each: the primaries work on a batch together),
and followed there by ``WAIT`` for the replicas the topology asks for - on the same connection, since WAIT
counts that connection's writes. A node that lacks a script (a fresh primary after a
failover) gets ``SCRIPT LOAD`` and the calls again. An error retrying cannot heal raises
``FatalRedisError``; a transient one refreshes the slot map and is raised for the caller to retry (the
scripts are idempotent).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any

import redis
from redis import exceptions as rex

from daemon.runtime.redisconn import ReplicasBehind, Topology, fatal

WAIT_TIMEOUT_MS = 5000  # how long a write waits for its replicas before the batch is written again


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1 (what EVALSHA names)."""

    name: str
    source: str
    sha: str = ""  # computed from the source (once: scripts run thousands of times a second)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    def where(self, error: Exception) -> str:
        """Where in this script an error happened (Redis names the line: ``@user_script:18``), with the command
        that line runs - a refused permission inside a script names only the script otherwise."""
        found = re.search(r"@user_script:(\d+)", str(error))
        lines = self.source.splitlines()
        if not found or not 0 < int(found.group(1)) <= len(lines):
            return ""
        line = lines[int(found.group(1)) - 1].strip()
        command = re.search(r"call\('([A-Za-z]+)'", line)
        return f" (line {found.group(1)}: {command.group(1) if command else line})"

    @classmethod
    def load(cls, package: str, name: str) -> Script:
        return cls(name, resources.files(package).joinpath(name).read_text())


@dataclass(frozen=True)
class Call:
    """One script call: its keys (one slot) and arguments."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


def run(topology: Topology, calls: Sequence[Call], wait: bool = True) -> list[Any]:
    """Every call's reply, in order; ``wait``: each node's writes reach its replicas before returning."""
    groups: dict[int, tuple[redis.Redis, list[int]]] = {}
    for position, call in enumerate(calls):
        node = topology.node_of(call.keys[0])
        groups.setdefault(id(node), (node, []))[1].append(position)
    jobs = list(groups.values())
    outcomes = topology.on_each(
        [partial(_run_on, topology, node, [calls[p] for p in positions], wait) for node, positions in jobs]
    )
    errors = [o for o in outcomes if isinstance(o, Exception)]
    if errors:  # one that cannot heal first: the role must stop rather than retry
        if any(isinstance(e, rex.RedisError) for e in errors):
            topology.refresh()
        raise next((e for e in errors if not isinstance(e, rex.RedisError)), errors[0])
    replies: list[Any] = [None] * len(calls)
    for (_, positions), got in zip(jobs, outcomes, strict=True):
        for position, reply in zip(positions, got, strict=True):  # type: ignore[arg-type]  # not an error here
            replies[position] = reply
    return replies


def _run_on(topology: Topology, node: redis.Redis, calls: list[Call], wait: bool) -> list[Any]:
    replies = _pipeline(topology, node, calls, wait)
    missing = {c.script for c, r in zip(calls, replies, strict=True) if isinstance(r, rex.NoScriptError)}
    if missing:  # a primary that never saw the script (or lost it in a failover): load it, run them again
        for script in missing:
            node.script_load(script.source)
        replies = _pipeline(topology, node, calls, wait)
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            raise fatal(reply, f"script {call.script.name}{call.script.where(reply)}") or reply
    return replies


def _pipeline(topology: Topology, node: redis.Redis, calls: list[Call], wait: bool) -> list[Any]:
    """The calls' replies (errors as exception objects) after WAIT, which raises when replicas lag."""
    pipe = node.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    replicas = topology.wait_count(node) if wait else 0
    if replicas:
        pipe.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS)  # type: ignore[no-untyped-call]
    replies: list[Any] = pipe.execute(raise_on_error=False)
    if replicas:
        acked = replies.pop()
        if isinstance(acked, int) and acked < replicas and not any(isinstance(r, Exception) for r in replies):
            raise ReplicasBehind(f"{acked} of {replicas} replicas acknowledged within {WAIT_TIMEOUT_MS} ms")
    return replies
