"""Redis effects of the item catalogue: one atomic script per virtual shard of the batch's items.

Each item's newest record is kept in its shard's ``cat`` hash, unavailable items in ``cat:off``, and every
change is appended to the shard's capped ``cat:log`` stream, which serving follows to give new items vectors
and to take unavailable ones out of lists (daemon/serve/catalogue.py). The script orders records by ``ts``
(catalogue.lua), so a replay, or the same records in another order, ends in the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology
from daemon.runtime.scripts import Call, Script, run
from schemas.catalogue import CatalogueEvent


class CatalogueStore:
    """Applies batches of decoded catalogue events to Redis."""

    def __init__(self, topology: Topology, keys: Keys, log_len: int) -> None:
        self.topology = topology
        self.keys = keys
        self.log_len = log_len
        self._script = Script.load("daemon.ingest", "catalogue.lua")

    def apply(self, records: Iterable[CatalogueEvent]) -> tuple[int, int]:
        """(records applied, records that changed nothing: replays and older ones); raises redis errors (the
        caller retries: a replay changes nothing)."""
        by_shard: dict[int, list[Any]] = {}
        for rec in records:
            args = by_shard.setdefault(self.keys.shard_of(rec.item_id), [self.log_len])
            args += [rec.item_id, rec.ts, 1 if rec.available else 0, rec.to_json()]
        calls = [
            Call(self._script, [self.keys.catalogue(s), self.keys.unavailable(s), self.keys.catalogue_log(s)], args)
            for s, args in sorted(by_shard.items())
        ]
        replies = run(self.topology, calls) if calls else []
        return sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)
