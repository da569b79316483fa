"""Publishing a model: the store's CURRENT, then the Redis pointer every serving replica watches.

``model:current`` holds ``{"version", "path", "published_at", "kind"}``; a
rollback is the pointer moving back to an earlier snapshot.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import RedisClient
from trainer.snapshot import ModelStore, load_snapshot


@dataclass(frozen=True)
class Pointer:
    version: str
    path: str
    published_at: int  # epoch ms
    kind: str = ""


def read_pointer(client: RedisClient, keys: Keys) -> Pointer | None:
    raw: Any = client.get(keys.model_current)
    if not raw:
        return None
    doc = json.loads(raw)
    return Pointer(doc["version"], doc["path"], int(doc["published_at"]), doc.get("kind", ""))


def write_pointer(client: RedisClient, keys: Keys, pointer: Pointer) -> None:
    client.set(keys.model_current, json.dumps(asdict(pointer)))


def publish(client: RedisClient, keys: Keys, store: ModelStore, version: str) -> Pointer:
    """Make ``version`` current in the store and point every serving replica at it."""
    store.publish(version)
    _, manifest = load_snapshot(store.root / "versions" / version)
    pointer = Pointer(
        version, str((store.root / "versions" / version).resolve()), int(time.time() * 1000), manifest.model_type
    )
    write_pointer(client, keys, pointer)
    return pointer
