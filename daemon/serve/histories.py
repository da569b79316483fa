"""A batch of users' histories as flat numpy arrays: serving's hot path.

Ingest packs each history as 12-byte records (daemon.runtime.history).
Serving reads a few hundred of them per step; decoding them into a Python
object per entry, then mapping item numbers to ids and ids to model
positions, was a fifth of its time. Here a batch is decoded with one
``np.frombuffer``, item numbers map to positions of the served model through
a lookup table, and weights are computed for all entries at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from daemon.runtime.history import RECORD, check_blob

IntArray = npt.NDArray[np.int64]
UNRESOLVED = -2  # in PositionMap: not asked yet (-1: not in the model)


@dataclass(frozen=True)
class HistoryBatch:
    """Histories of ``users``, concatenated: user k's records are ``bounds[k]:bounds[k + 1]``, oldest first."""

    users: list[str]
    bounds: IntArray  # (users + 1,)
    ts: IntArray  # epoch seconds
    item: IntArray  # dense item numbers (keys.items)
    code: npt.NDArray[np.uint8]

    @classmethod
    def decode(cls, users: Sequence[str], blobs: Sequence[bytes | None]) -> HistoryBatch:
        sizes = np.zeros(len(users) + 1, np.int64)
        for k, (user, blob) in enumerate(zip(users, blobs, strict=True)):
            sizes[k + 1] = check_blob(user, blob)
        records = np.frombuffer(b"".join(b for b in blobs if b), RECORD)
        return cls(
            list(users),
            np.cumsum(sizes),
            records["ts"].astype(np.int64),
            records["item"].astype(np.int64),
            records["code"].copy(),
        )

    def owner(self) -> IntArray:
        """The user row of every record."""
        return np.repeat(np.arange(len(self.users)), np.diff(self.bounds))

    def decayed_weights(self, table: npt.NDArray[np.float64], half_life_s: float) -> npt.NDArray[np.float64]:
        """Each record's implicit weight (``table`` by code) halved every ``half_life_s`` it is older than its
        user's newest record: event time against event time, never against the wall clock, so a replay of
        last year's events weighs them as a live stream would (and as offline evaluation does)."""
        owner = self.owner()
        newest = np.zeros(len(self.users), np.int64)
        np.maximum.at(newest, owner, self.ts)
        age = newest[owner] - self.ts
        return np.asarray(table[self.code] * np.exp2(-age / half_life_s), np.float64)


class PositionMap:
    """Item number -> position in one served model (-1: the model lacks it), filled on demand."""

    def __init__(self, version: str, positions: Mapping[str, int]) -> None:
        self.version = version
        self.positions = positions
        self.table = np.full(1024, UNRESOLVED, np.int64)

    def lookup(self, numbers: IntArray, names: Callable[[Iterable[int]], Mapping[int, str]]) -> IntArray:
        """Positions of ``numbers``; ``names`` resolves numbers never asked before (item number -> id)."""
        if len(numbers) and int(numbers.max()) >= len(self.table):
            grown = np.full(max(2 * len(self.table), int(numbers.max()) + 1), UNRESOLVED, np.int64)
            grown[: len(self.table)] = self.table
            self.table = grown
        found = self.table[numbers]
        todo = np.unique(numbers[found == UNRESOLVED])
        if len(todo):
            ids = names(todo.tolist())
            self.table[todo] = [self.positions.get(ids.get(n, ""), -1) for n in todo.tolist()]
            found = self.table[numbers]
        return found
