"""A user's history in Redis (``u:{<user>}:hist``) and what an event in it is worth: the one owner of the
record layout and of the event-weight rule. Ingest writes records (ingest.lua packs them with the formats
given here, as data), serving and training decode them with ``RECORD``, and all three weigh them with
``weight_table``.

A record is 12 bytes, big-endian: the event second (u32), the low 24 bits of crc32(event_id), the dense
item number (u32, see ``Keys.items``) and a code byte - the event type's index in ``EVENT_TYPES``, or for
a rating ``RATING_CODE`` + the value in half steps (0..123.5; other types' values are not kept). Records
are sorted ascending by (second, crc), the dedup key, so the newest are last.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.events import EVENT_TYPES

RECORD_SIZE = 12
CRC_MASK = 0xFFFFFF
RATING_CODE = 8
MAX_RATING_STEPS = 255 - RATING_CODE
TYPE_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}

# The layout in the struct formats of Redis's Lua (ingest.lua receives them in each batch): the whole
# record, its (second, crc) sort key, and that key with the item number (the dedup key).
LUA_FORMATS = {"record": ">II3IB", "key": ">II3", "key_item": ">II3I", "size": RECORD_SIZE}
# The same layout for numpy: a batch of histories decodes with one np.frombuffer.
RECORD = np.dtype([("ts", ">u4"), ("crc_hi", ">u2"), ("crc_lo", "u1"), ("item", ">u4"), ("code", "u1")])
_STRUCT = struct.Struct(">IHBIB")  # second, crc high 16 bits, crc low 8 bits, item, code
assert RECORD.itemsize == _STRUCT.size == RECORD_SIZE


def code_of(event_type: str, value: float | None) -> int:
    """The code byte of an event (a rating keeps its value in half steps)."""
    if event_type != "rating":
        return TYPE_CODES[event_type]
    steps = round(2 * (value or 0.0))
    return RATING_CODE + max(0, min(MAX_RATING_STEPS, steps))


def decode_code(code: int) -> tuple[str, float]:
    """(event type, rating value or 0.0) of a code byte; ValueError for a code no event has."""
    if code >= RATING_CODE:
        return "rating", (code - RATING_CODE) / 2
    if code >= len(EVENT_TYPES):
        raise ValueError(f"history code {code} names no event type")
    return EVENT_TYPES[code], 0.0


def pack(second: int, crc: int, item: int, code: int) -> bytes:
    """One record (tests and tools; ingest.lua packs the same bytes)."""
    return _STRUCT.pack(second, (crc & CRC_MASK) >> 8, crc & 0xFF, item, code)


def event_weight(event_type: str, value: float, weights: Mapping[str, float], rating_threshold: float) -> float:
    """The rule: an event's implicit weight is its type's weight; a rating's only at or above the threshold
    (as stored: in half steps). A weight <= 0 is not a positive signal."""
    if event_type == "rating" and value < rating_threshold:
        return 0.0
    return float(weights.get(event_type, 0.0))


def weight_table(weights: Mapping[str, float], rating_threshold: float) -> npt.NDArray[np.float64]:
    """``event_weight`` of every code byte (256 entries; 0 for codes no event has)."""
    table = np.zeros(256, np.float64)
    for code in range(256):
        try:
            table[code] = event_weight(*decode_code(code), weights, rating_threshold)
        except ValueError:
            continue
    return table


def positive_weight_table(weights: Mapping[str, float], rating_threshold: float) -> npt.NDArray[np.float64]:
    """``weight_table`` with every weight that is not a positive signal as 0: what user vectors count."""
    return np.maximum(weight_table(weights, rating_threshold), 0.0)


def check_blob(owner: str, blob: bytes | None) -> int:
    """The number of records in a history value; ValueError naming the owner when it is not whole records."""
    size = len(blob) if blob else 0
    if size % RECORD_SIZE:
        raise ValueError(f"history of {owner!r}: {size} bytes is not a whole number of records")
    return size // RECORD_SIZE


def decode(blob: bytes) -> npt.NDArray[np.void]:
    """Records as a numpy structured array (fields of ``RECORD``), oldest first."""
    check_blob("?", blob)
    return np.frombuffer(blob, RECORD)


@dataclass(frozen=True, slots=True)
class Entry:
    """One record, decoded (for the few places that want Python objects: lookups, reports, tests)."""

    ts: int  # epoch seconds
    crc: int
    item: int  # dense item number (see keys.items)
    type: str
    value: float


def entries(blob: bytes | None) -> list[Entry]:
    """Packed records -> entries, oldest first."""
    if not blob:
        return []
    check_blob("?", blob)
    return [
        Entry(ts, crc_hi << 8 | crc_lo, item, *decode_code(code))
        for ts, crc_hi, crc_lo, item, code in _STRUCT.iter_unpack(blob)
    ]
