"""Which model version is served: the Redis pointer, and hot swaps.

The training role publishes a snapshot folder and then sets ``model:current``
to ``{"version", "path", "published_at", "kind"}``. Every serving replica polls
that pointer; on a change it loads the snapshot and builds the new indexes in a
background thread while the old ones keep serving (``on_built`` hooks run there
too), then swaps the whole bundle in one assignment. A rollback is just the pointer moving back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.progress import Progress
from daemon.runtime.redisconn import RedisClient
from daemon.serve.index import IndexSpec, ServingIndex
from daemon.train.publish import Pointer, read_pointer
from trainer.models.base import EmbeddingModel

log = logging.getLogger(__name__)


class ModelWatcher:
    """Holds the served ``ServingIndex`` and replaces it when the pointer moves."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        spec: IndexSpec,
        loader: Callable[[str], EmbeddingModel],
        metrics: Metrics,
        poll_s: float,
    ) -> None:
        self.client = client
        self.keys = keys
        self.spec = spec
        self.loader = loader
        self.metrics = metrics
        self.poll_s = poll_s
        self.current: ServingIndex | None = None
        self._checked = 0.0
        self._building: threading.Thread | None = None
        self._built: ServingIndex | None = None
        self._failed: set[str] = set()
        # Called in the build thread with each built index before it is swapped in: work a swap needs that
        # should not stall serving (placing the catalogue's new items). A hook that raises fails the build.
        self.on_built: list[Callable[[ServingIndex], None]] = []
        # Called in the polling thread as a build starts, with the model's version (where a follower notes
        # how far it had read, to apply again what changes while the index builds).
        self.on_start: list[Callable[[str], None]] = []

    def _build(self, pointer: Pointer) -> None:
        try:
            model = self.loader(pointer.path)
            progress = Progress(self.metrics, "index_build", 2 * model.n_items, "vectors")
            built = ServingIndex.build(pointer.version, model, pointer.published_at, self.spec, progress.advance)
            progress.finish()
            for hook in self.on_built:
                hook(built)
            self._built = built
        except Exception:
            log.exception("cannot serve model %s from %s", pointer.version, pointer.path)
            self.metrics.errors.labels("serve").inc()
            self._failed.add(pointer.version)

    @property
    def building(self) -> bool:
        """Whether a newer model's index is being built (the current one, if any, still serves)."""
        return self._building is not None

    def poll(self, wait: bool = False) -> ServingIndex | None:
        """Swap in a finished build (returned once), or start one when the pointer moved."""
        if self._building is not None and (wait or not self._building.is_alive()):
            self._building.join()
            self._building = None
            built, self._built = self._built, None
            if built is not None:
                self._swap(built)
                return built
        now = time.monotonic()
        if self._building is not None or (now - self._checked < self.poll_s and not wait):
            return None
        self._checked = now
        pointer = read_pointer(self.client, self.keys)
        current = self.current.version if self.current else None
        if pointer is None or pointer.version == current or pointer.version in self._failed:
            return None
        log.info("model %s published; building its index beside %s", pointer.version, current)
        for hook in self.on_start:
            hook(pointer.version)
        self._building = threading.Thread(target=self._build, args=(pointer,), name="recd-index-build", daemon=True)
        self._building.start()
        return self.poll(wait=True) if wait else None

    def _swap(self, built: ServingIndex) -> None:
        old = self.current
        self.current = built  # one assignment: readers see the old bundle or the new one
        if old is not None:
            self.metrics.model_info.labels(old.version, old.model.kind).set(0)
        self.metrics.model_info.labels(built.version, built.model.kind).set(1)
        self.metrics.model_published.set(built.published_at / 1000)
        self.metrics.index_items.set(len(built.item_ids))
        self.metrics.index_build.set(built.build_seconds)
        log.info("serving model %s (%d items, %s index)", built.version, len(built.item_ids), built.kind)
