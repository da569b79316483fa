"""A batch of users' histories as flat numpy arrays: serving's hot path.

Ingest packs each history as 12-byte records (keys.HISTORY_RECORD_SIZE).
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

from daemon.runtime.keys import HISTORY_RECORD_SIZE, decode_code
from schemas.events import EVENT_TYPES

RECORD = np.dtype([("ts", ">u4"), ("crc_hi", ">u2"), ("crc_lo", "u1"), ("item", ">u4"), ("code", "u1")])
assert RECORD.itemsize == HISTORY_RECORD_SIZE

IntArray = npt.NDArray[np.int64]
UNRESOLVED = -2  # in PositionMap: not asked yet (-1: not in the model)


def code_weights(weights: Mapping[str, float], rating_threshold: float) -> npt.NDArray[np.float64]:
    """Implicit weight of each history code byte (256 entries): the event type's weight, a rating's
    only at or above the threshold; negative weights count as 0 (not positive)."""
    table = np.zeros(256, np.float64)
    for code in range(256):
        index, value = decode_code(code)
        if index >= len(EVENT_TYPES):
            continue  # no such type: never written
        kind = "rating" if index < 0 else EVENT_TYPES[index]
        if kind != "rating" or value >= rating_threshold:
            table[code] = weights.get(kind, 0.0)
    return np.maximum(table, 0.0)


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
            if blob and len(blob) % HISTORY_RECORD_SIZE:
                raise ValueError(f"history of {user!r}: {len(blob)} bytes is not a whole number of records")
            sizes[k + 1] = len(blob) // HISTORY_RECORD_SIZE if blob else 0
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

    def decayed_weights(
        self, table: npt.NDArray[np.float64], now_s: float, half_life_s: float
    ) -> npt.NDArray[np.float64]:
        """Each record's implicit weight (``table`` by code) halved every ``half_life_s`` of age."""
        age = np.maximum(0.0, now_s - self.ts)
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
