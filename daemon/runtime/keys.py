"""Every Redis key recd reads or writes, and the format of its value.

All names start with the configured prefix (``RECD_REDIS_PREFIX``, default
``recd:``). Per-user state keys carry the user id as a hash tag (``{...}``) so a
user's keys live in one Redis Cluster slot.

The table of every key, its type and value is docs/contracts.md (tests/test_contracts.py keeps the two
in step); the history record's layout is daemon/runtime/history.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
