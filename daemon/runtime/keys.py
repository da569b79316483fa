"""Every Redis key recd reads or writes.

All names start with the configured prefix (``RECD_REDIS_PREFIX``, default ``recd:``). Users are spread over
``RECD_REDIS_SHARDS`` virtual shards (a hash of the user id); a user's keys and every per-shard aggregate
(popularity, trending, segment popularity, the changed-user queues, stats) carry their shard's hash tag
``s{<n>}``, so one batch of events applies as one atomic script per shard, and on a Redis Cluster each shard
is one slot. The item catalogue uses the same shards, by item id. The item dictionary shares the tag
``{items}``. Lists (``rec:``, ``sim:``) and the model
pointer carry no tag: applications read them with one GET wherever they live.

The table of every key, its type and value is docs/contracts.md (tests/test_contracts.py keeps the two in
step); the history record's layout is daemon/runtime/history.py.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

_SHARD_KEY = re.compile(rb"s\{(\d+)\}:u:(.*):hist$", re.S)


def text(raw: Any) -> str:
    """A Redis reply (bytes) as str."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def glob_escape(value: str) -> str:
    """``value`` as a literal in a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", value)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, for ``shards`` virtual shards."""

    prefix: str
    shards: int

    def shard_of(self, user_id: str) -> int:
        """The virtual shard of a user (or, for the catalogue, of an item): stable across processes and
        restarts."""
        return zlib.crc32(user_id.encode()) % self.shards

    def _shard(self, shard: int) -> str:
        return f"{self.prefix}s{{{shard}}}:"

    # --- no tag: read by applications with one GET
    def rec(self, user_id: str) -> str:
        return f"{self.prefix}rec:{user_id}"

    def sim(self, item_id: str) -> str:
        return f"{self.prefix}sim:{item_id}"

    # --- a user's own keys, in the user's shard
    def history(self, user_id: str) -> str:
        return f"{self._shard(self.shard_of(user_id))}u:{user_id}:hist"

    def profile(self, user_id: str) -> str:
        return f"{self._shard(self.shard_of(user_id))}u:{user_id}:prof"

    def history_pattern(self) -> str:
        """SCAN MATCH pattern of every history key."""
        return f"{glob_escape(self.prefix)}s{{*}}:u:*:hist"

    def history_owner(self, key: bytes | str) -> tuple[int, str]:
        """The shard and user id of a history key (as SCAN returns it)."""
        raw = key if isinstance(key, bytes) else key.encode()
        found = _SHARD_KEY.match(raw, len(self.prefix.encode()))
        if found is None:
            raise ValueError(f"not a history key of prefix {self.prefix!r}: {raw[:120]!r}")
        return int(found.group(1)), found.group(2).decode()

    # --- per-shard aggregates and queues
    def popularity(self, shard: int) -> str:
        return f"{self._shard(shard)}pop"

    def trending(self, shard: int) -> str:
        return f"{self._shard(shard)}trend"

    def trending_epoch(self, shard: int) -> str:
        return f"{self._shard(shard)}trend:epoch"

    def segment(self, shard: int, segment: str) -> str:
        return f"{self._shard(shard)}seg:{segment}"

    def segments(self, shard: int) -> str:
        return f"{self._shard(shard)}segs"

    def segment_cache(self, shard: int, segment: str) -> str:
        return f"{self._shard(shard)}segcache:{segment}"

    def active(self, shard: int) -> str:
        return f"{self._shard(shard)}active"

    def dirty(self, shard: int) -> str:
        return f"{self._shard(shard)}dirty"

    def dirty_inflight(self, shard: int) -> str:
        return f"{self._shard(shard)}dirty:inflight"

    def swap_queue(self, shard: int) -> str:
        return f"{self._shard(shard)}dirty:swap"

    def stats(self, shard: int) -> str:
        return f"{self._shard(shard)}stats"

    # --- the item catalogue, spread over the shards by item id (``shard_of(item_id)``)
    def catalogue(self, shard: int) -> str:
        """Hash: item id -> its newest catalogue record (schemas/catalogue.py's JSON)."""
        return f"{self._shard(shard)}cat"

    def unavailable(self, shard: int) -> str:
        """Set: the shard's items whose newest record says ``available: false``."""
        return f"{self._shard(shard)}cat:off"

    def catalogue_log(self, shard: int) -> str:
        """Stream (capped): one entry per catalogue change (new item, availability, attributes), read by serve."""
        return f"{self._shard(shard)}cat:log"

    # --- the item dictionary, in one slot
    @property
    def items(self) -> str:
        return f"{self.prefix}{{items}}"

    @property
    def item_ids(self) -> str:
        return f"{self.prefix}{{items}}:ids"

    @property
    def item_seq(self) -> str:
        return f"{self.prefix}{{items}}:seq"

    @property
    def item_first_seen(self) -> str:
        return f"{self.prefix}{{items}}:first"

    @property
    def item_generation(self) -> str:
        return f"{self.prefix}{{items}}:gen"

    # --- global, rarely written
    @property
    def exclusions(self) -> str:
        return f"{self.prefix}exclude"

    @property
    def model_current(self) -> str:
        return f"{self.prefix}model:current"

    @property
    def model_refreshed(self) -> str:
        return f"{self.prefix}model:refreshed"

    @property
    def model_choice(self) -> str:
        """The model search's choice of preset and settings (``schemas.records.ModelChoice``)."""
        return f"{self.prefix}model:choice"

    @property
    def train_watermark(self) -> str:
        return f"{self.prefix}model:events"

    @property
    def train_lock(self) -> str:
        return f"{self.prefix}lock:train"

    @property
    def layout(self) -> str:
        """Marks the key layout (``sharded <n>``): a daemon refuses a prefix written with another one."""
        return f"{self.prefix}layout"

    @property
    def legacy_items(self) -> str:
        """The item hash of the layout before virtual shards: its presence means an old layout."""
        return f"{self.prefix}items"
