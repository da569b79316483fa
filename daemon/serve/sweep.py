"""Finding the lists that hold items which just became unavailable, a page of keys at a time.

Lists (``rec:<user>``, ``sim:<item>``) carry no hash tag, so they are found by ``SCAN`` on every primary;
each page's values are read in one pipeline and searched for the items (as JSON strings) before any is
parsed. Users whose list holds one are queued for a rewrite (their list is then made without it); the
owners of similar-items lists that hold one are returned for the caller to rewrite. Items that become
unavailable during a sweep start another one after it, so every list is searched for every item.
The cost is one pass over the lists per batch of unavailable items (docs/operations.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import orjson

from daemon.runtime.keys import Keys, glob_escape, text
from daemon.runtime.redisconn import Topology

log = logging.getLogger(__name__)

PAGE = 1000  # keys per SCAN page (one page a serving step)


class ListSweep:
    """One sweep at a time over every primary's ``rec:`` then ``sim:`` keys."""

    def __init__(self, topology: Topology, keys: Keys, mark_users: Callable[[list[str]], None]) -> None:
        self.topology = topology
        self.keys = keys
        self.mark_users = mark_users  # queue users for a list rewrite
        self.items: set[str] = set()  # what the running sweep looks for
        self.waiting: set[str] = set()  # items for the next sweep
        self._todo: list[tuple[Any, str, bool]] = []  # (node, pattern, similar-items lists?) still to scan
        self._cursor = 0

    @property
    def running(self) -> bool:
        return bool(self.items)

    def start(self, items: set[str]) -> None:
        """Search every list for ``items`` (after the running sweep, if any)."""
        self.waiting |= items
        if not self.running:
            self._begin()

    def _begin(self) -> None:
        self.items, self.waiting = self.waiting, set()
        escaped, plain = glob_escape(self.keys.prefix), len(self.keys.prefix)
        patterns = [(escaped + self.keys.rec("*")[plain:], False), (escaped + self.keys.sim("*")[plain:], True)]
        nodes = self.topology.primaries()
        self._todo = [(node, p, similar) for p, similar in patterns for node in nodes] if self.items else []
        self._cursor = 0

    def step(self) -> list[str]:
        """Search one page; returns the items whose similar-items lists hold a searched item."""
        if not self._todo:
            return []
        node, pattern, similar = self._todo[0]
        self._cursor, found = node.scan(self._cursor, match=pattern, count=PAGE)
        stale = self._search(node, [text(k) for k in found], similar)
        if self._cursor == 0:
            self._todo.pop(0)
            if not self._todo:
                log.info("sweep for %d unavailable items done", len(self.items))
                self.items = set()
                if self.waiting:
                    self._begin()
        return stale

    def _search(self, node: Any, names: list[str], similar: bool) -> list[str]:
        if not names:
            return []
        values = node.mget(names) if not self.topology.cluster else _each(node, names)
        needles = [json.dumps(i, ensure_ascii=False).encode() for i in self.items]
        owners = []
        for name, value in zip(names, values, strict=True):
            if value is None or not any(n in value for n in needles):
                continue
            if self.items.intersection(orjson.loads(value)["items"]):
                owners.append(name[len(self.keys.sim("") if similar else self.keys.rec("")) :])
        if similar:
            return owners
        if owners:
            self.mark_users(owners)
        return []


def _each(node: Any, names: list[str]) -> list[Any]:
    """Values of keys of one cluster node (in different slots: a pipeline of GETs, not one MGET)."""
    pipe = node.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return list(pipe.execute())
