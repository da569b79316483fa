"""Every Redis key recd reads or writes, and the format of its value.

All names start with the configured prefix (``RECD_REDIS_PREFIX``, default
``recd:``). Per-user state keys carry the user id as a hash tag (``{...}``) so a
user's keys live in one Redis Cluster slot. The README's key table is this file.

| key | type | value |
|---|---|---|
| ``rec:<user>`` | string | JSON ``RecommendationList`` (the lookup contract) |
| ``sim:<item>`` | string | JSON ``SimilarList`` |
| ``u:{<user>}:hist`` | string | packed 12-byte history records, see ``HISTORY_RECORD_SIZE`` |
| ``u:{<user>}:prof`` | hash | profile attributes + ``_ts`` (event ms of the newest profile) |
| ``items`` | hash | item id -> dense item number used in histories |
| ``items:ids`` | hash | dense item number -> item id |
| ``items:seq`` | string | last item number given out |
| ``items:first`` | zset | item id -> first time seen (ms): new-item exposure |
| ``items:gen`` | string | token naming this generation of item numbers (clients cache numbers per token) |
| ``pop`` | zset | item id -> all-time sum of positive event weights |
| ``trend`` | zset | item id -> forward-decayed positive weight (half-life setting) |
| ``trend:epoch`` | string | epoch seconds the trend scores are relative to |
| ``seg:<segment>`` | zset | item id -> positive weight of users whose finest profile segment this is |
| ``segs`` | set | every segment that has a ``seg:`` key (coarser levels are unions of them) |
| ``active`` | zset | user id -> wall time (ms) the user's list was last written for a change of theirs |
| ``dirty`` | zset | user id -> earliest unserved change (message time, ms) |
| ``dirty:inflight`` | zset | user id -> lease deadline (ms) of a serving worker |
| ``dirty:swap`` | zset | user id -> minus last activity (ms): lists to refresh after a model swap |
| ``exclude`` | set | item ids never recommended (ops may add; serving re-reads it every second) |
| ``stats`` | hash | ``applied``, ``duplicates``, ``stale``, ``profiles``, ``last_ts`` |
| ``model:current`` | string | JSON ``{"version", "published_at", "path"}`` of the served model |
| ``model:refreshed`` | string | model version whose list refresh was queued (once per version) |
| ``model:events`` | string | applied-event count at the last training (the scheduler's watermark) |
| ``lock:train`` | string | holder id of the training leader (expires) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A history record, 12 bytes, big-endian: event second (u32), the low 24 bits of crc32(event_id),
# item number (u32), and a code byte - the event type's index in EVENT_TYPES, or for a rating
# RATING_CODE + the value in half steps (0..123.5; other types' values are not kept). Records are
# sorted ascending by (second, crc): the dedup key, so the newest records are last.
HISTORY_RECORD_SIZE = 12
CRC_MASK = 0xFFFFFF
RATING_CODE = 8
MAX_RATING_STEPS = 255 - RATING_CODE


def code_of(type_index: int, is_rating: bool, value: float | None) -> int:
    """The history code byte of an event (see above)."""
    if not is_rating:
        return type_index
    steps = round(2 * (value or 0.0))
    return RATING_CODE + max(0, min(MAX_RATING_STEPS, steps))


def decode_code(code: int) -> tuple[int, float]:
    """(type index or -1 for a rating, rating value)."""
    return (-1, (code - RATING_CODE) / 2) if code >= RATING_CODE else (code, 0.0)


def text(raw: Any) -> str:
    """A Redis reply (bytes) as str."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "recd:"

    def rec(self, user_id: str) -> str:
        return f"{self.prefix}rec:{user_id}"

    def sim(self, item_id: str) -> str:
        return f"{self.prefix}sim:{item_id}"

    def history(self, user_id: str) -> str:
        return f"{self.prefix}u:{{{user_id}}}:hist"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}u:{{{user_id}}}:prof"

    def segment(self, segment: str) -> str:
        return f"{self.prefix}seg:{segment}"

    def user_prefix(self) -> str:
        """What history/profile keys start with (the Lua scripts build them from it)."""
        return f"{self.prefix}u:"

    @property
    def items(self) -> str:
        return f"{self.prefix}items"

    @property
    def item_ids(self) -> str:
        return f"{self.prefix}items:ids"

    @property
    def item_seq(self) -> str:
        return f"{self.prefix}items:seq"

    @property
    def item_first_seen(self) -> str:
        return f"{self.prefix}items:first"

    @property
    def item_generation(self) -> str:
        return f"{self.prefix}items:gen"

    @property
    def segments(self) -> str:
        return f"{self.prefix}segs"

    @property
    def popularity(self) -> str:
        return f"{self.prefix}pop"

    @property
    def trending(self) -> str:
        return f"{self.prefix}trend"

    @property
    def trending_epoch(self) -> str:
        return f"{self.prefix}trend:epoch"

    @property
    def active(self) -> str:
        return f"{self.prefix}active"

    @property
    def dirty(self) -> str:
        return f"{self.prefix}dirty"

    @property
    def dirty_inflight(self) -> str:
        return f"{self.prefix}dirty:inflight"

    @property
    def swap_queue(self) -> str:
        return f"{self.prefix}dirty:swap"

    @property
    def exclusions(self) -> str:
        return f"{self.prefix}exclude"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def model_current(self) -> str:
        return f"{self.prefix}model:current"

    @property
    def model_refreshed(self) -> str:
        return f"{self.prefix}model:refreshed"

    @property
    def train_watermark(self) -> str:
        return f"{self.prefix}model:events"

    @property
    def train_lock(self) -> str:
        return f"{self.prefix}lock:train"

    def all_patterns(self) -> list[str]:
        """SCAN patterns covering everything recd owns (used by tests and `recd reset`)."""
        return [f"{self.prefix}*"]
