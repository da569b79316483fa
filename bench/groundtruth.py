"""Reference model of ingest's Redis effects, written independently of the Lua
script, to check Redis after a replay (crash tests, the ingest benchmark).

Rules (README, "Guarantees"; docs/contracts.md): per user, events are taken in partition
order; an event is a duplicate when its (second, crc24(event_id), item) is in the
user's history; it is stale when the history is full and it sorts before the
oldest record; otherwise it is applied: inserted in (second, crc) order, the
oldest record dropped beyond ``history_len``, and - when its weight is positive
- added to item popularity and to the user's finest profile segment. A rating's
weight is its type's when the value as stored (in half steps) reaches the threshold.
"""

from __future__ import annotations

import bisect
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Expected:
    histories: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # user -> [(sec, crc, item)]
    popularity: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    segments: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    applied: int = 0
    duplicates: int = 0
    stale: int = 0


# A rating is kept in half steps (docs/contracts.md: the record's code byte is 8 + the value in half steps, so
# 0 to 123.5): the rule compares the value as kept, so 3.76 counts as 4.0 and 3.74 as 3.5.
RATING_MAX_HALF_STEPS = 247


def stored_rating(value: float) -> float:
    """A rating value as recd keeps it: the nearest half step (ties to even, as Python rounds), within 0..123.5."""
    return min(max(round(2 * value), 0), RATING_MAX_HALF_STEPS) / 2


def weight_of(event: Mapping[str, Any], weights: Mapping[str, float], threshold: float) -> float:
    w = float(weights.get(event["type"], 0.0))
    if event["type"] == "rating":
        return w if stored_rating(float(event.get("value", 0))) >= threshold else 0.0
    return w


def replay(
    events: Iterable[Mapping[str, Any]],
    history_len: int,
    weights: Mapping[str, float],
    threshold: float = 4.0,
    segment_of: Mapping[str, str] | None = None,
) -> Expected:
    """Apply events (already in per-user delivery order) to an empty state."""
    out = Expected()
    segs = segment_of or {}
    for ev in events:
        hist = out.histories.setdefault(ev["user_id"], [])
        rec = (int(ev["ts"]) // 1000, zlib.crc32(ev["event_id"].encode()) & 0xFFFFFF, ev["item_id"])
        if rec in hist:
            out.duplicates += 1
            continue
        if len(hist) >= history_len and rec[:2] < hist[0][:2]:
            out.stale += 1
            continue
        keys = [r[:2] for r in hist]
        hist.insert(bisect.bisect_right(keys, rec[:2]), rec)
        del hist[:-history_len]
        out.applied += 1
        w = weight_of(ev, weights, threshold)
        if w > 0:
            out.popularity[ev["item_id"]] += w
            seg = segs.get(ev["user_id"])
            if seg:
                out.segments[seg][ev["item_id"]] += w
    return out
