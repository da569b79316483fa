"""Serving's view of the item catalogue: new items placed at once, unavailable items taken out of lists.

``CatalogueFollower`` follows the shards' change streams (daemon/ingest/catalogue.py writes them):
* an available item the served model lacks gets vectors from its attributes (trainer/attribute_vectors.py)
  and joins the index's cold items: it has a similar-items list at once, appears in its neighbours' lists,
  and can take users' new-item slots. After a model swap the cold items are placed again from the whole
  catalogue, for the new model;
* an unavailable item joins the exclusions every list is made with, and a sweep (sweep.py) finds the lists
  that hold it, a page of keys per step: users' lists are queued for a rewrite, similar-items lists are
  rewritten on the spot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from daemon.runtime.catalogue import Change, log_heads, read_catalogue, read_changes, records_of
from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology
from daemon.serve.index import ColdItems, ServingIndex
from daemon.serve.sweep import ListSweep
from schemas.records import SimilarList
from trainer.attribute_vectors import AttributeVectors
from trainer.attributes import ItemAttributes

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the change streams are read


@dataclass(frozen=True)
class Prepared:
    """The catalogue as one model's swap needs it."""

    version: str  # the model's
    heads: list[str]  # change-stream positions read before the catalogue
    unavailable: set[str]
    placer: AttributeVectors
    cold: ColdItems  # the catalogue's items the model lacks, placed
    items: int  # catalogue records read


def _placed(
    placer: AttributeVectors,
    cold: ColdItems,
    attributes: ItemAttributes,
    since: dict[str, int],
    gone: set[str] | tuple[()],
) -> ColdItems:
    """``cold`` with the items of ``attributes`` placed (those that can be; ``since``: their records' times)
    and ``gone`` removed."""
    placed = placer.place(attributes)
    ids = [attributes.item_ids[r] for r in placed.rows.tolist()]
    return cold.changed(ids, placed.rec, placed.sim, [since.get(i, 0) for i in ids], gone)


class CatalogueFollower:
    """Keeps the served index's cold items and the unavailable items in step with the catalogue."""

    def __init__(
        self, topology: Topology, keys: Keys, top_k: int, mark_users: Callable[[list[str]], None], per_list: int = 1
    ) -> None:
        self.topology = topology
        self.keys = keys
        self.top_k = top_k
        self.per_list = per_list  # the most cold items a similar-items list holds
        self.unavailable: set[str] = set()
        self.sweep = ListSweep(topology, keys, mark_users)
        self._after: list[str] | None = None  # per shard, the last change-stream entry read
        self._placer: AttributeVectors | None = None
        self._prepared: Prepared | None = None  # set in the build thread, taken at the swap (after a join)
        self._build_heads: list[str] | None = None  # the change streams' ends when the build began
        self.placed_in_build = False  # whether the last swap took the build thread's placement
        self._polled = 0.0

    def build_started(self, _version: str) -> None:
        """A model's index build begins: note the change streams' ends, so that what changes while it builds
        (new items: placed at the swap, and their similar-items lists written) is applied again after it."""
        try:
            self._build_heads = log_heads(self.topology, self.keys)
        except Exception:
            log.exception("catalogue: cannot read the change streams' ends; the swap reads them")
            self._build_heads = None

    def prepare(self, index: ServingIndex) -> None:
        """Read the catalogue and place the items ``index``'s model lacks, for ``on_swap`` to take: run in the
        index build thread, as fitting the attribute map takes seconds at a large catalogue. A failure here is
        logged and ``on_swap`` does the work itself."""
        try:
            self._prepared = self._prepare(index)
        except Exception:
            log.exception("catalogue: cannot place new items for model %s while building; at the swap", index.version)
            self._prepared = None

    def _prepare(self, index: ServingIndex) -> Prepared:
        # before the read (from the build's start where known): later changes are applied again after the swap
        heads = self._build_heads or log_heads(self.topology, self.keys)
        catalogue = read_catalogue(self.topology, self.keys)
        attributes = ItemAttributes.from_mapping(catalogue.attributes)
        placer = AttributeVectors.of(index.model, attributes)
        cold = [i for i in catalogue.attributes if i not in index.item_pos and i not in catalogue.unavailable]
        empty = ColdItems.of([], *_empty(index), per_list=self.per_list)
        placed = _placed(placer, empty, attributes.align(cold), catalogue.since, ())
        return Prepared(index.version, heads, catalogue.unavailable, placer, placed, len(catalogue.attributes))

    def on_swap(self, index: ServingIndex) -> None:
        """Place every available item the new model lacks, and (re)learn the unavailable items (from the work
        ``prepare`` did for this model, or now). Changes logged since are applied again by the next polls."""
        prepared, self._prepared = self._prepared, None
        self.placed_in_build = prepared is not None and prepared.version == index.version
        if prepared is None or not self.placed_in_build:
            prepared = self._prepare(index)
        self._build_heads = None
        self.unavailable, self._placer = set(prepared.unavailable), prepared.placer
        index.cold = prepared.cold
        self._after = prepared.heads
        log.info("catalogue: %d items, %d placed by attributes (ridge %g), %d unavailable", prepared.items,
                 len(index.cold.ids), prepared.placer.mapping.ridge, len(self.unavailable))  # fmt: skip

    def poll(self, index: ServingIndex | None, now_ms: int) -> int:
        """Apply the changes since the last poll (at most every ``POLL_S``); then one page of the sweep.
        Returns how many changes were applied."""
        if time.monotonic() - self._polled < POLL_S:
            self._sweep_page(index, now_ms)
            return 0
        self._polled = time.monotonic()
        if self._after is None:  # no model yet: follow from now, knowing what is unavailable already
            self._after = log_heads(self.topology, self.keys)
            self.unavailable = read_catalogue(self.topology, self.keys).unavailable
        changes = read_changes(self.topology, self.keys, self._after)
        if changes:
            self._apply(changes, index, now_ms)
        self._sweep_page(index, now_ms)
        return len(changes)

    def _apply(self, changes: list[Change], index: ServingIndex | None, now_ms: int) -> None:
        gone = {c.item_id for c in changes if not c.available}
        back = {c.item_id for c in changes if c.available}
        self.unavailable = (self.unavailable - back) | gone
        if gone:
            self.sweep.start(gone)
        if index is None or self._placer is None or index.cold is None:
            return
        fresh = sorted(i for i in back if i not in index.item_pos and i not in self.unavailable)
        records = records_of(self.topology, self.keys, fresh)
        attributes = ItemAttributes.from_mapping({item: rec.attributes for item, rec in records.items()})
        since = {item: rec.ts for item, rec in records.items()}
        index.cold = _placed(self._placer, index.cold, attributes.align(fresh), since, gone)
        placed = [i for i in fresh if i in index.cold.pos]  # new, changed, or placed at the swap already
        if placed:
            self._write_similar(index, placed, now_ms)

    def _write_similar(self, index: ServingIndex, added: list[str], now_ms: int) -> None:
        """Similar-items lists of the items just placed (their vectors may be new), and of their neighbours
        (which now may list them)."""
        cold = index.cold
        assert cold is not None
        rows = np.asarray([cold.pos[i] for i in added], np.int64)
        lists = index.similar_to(cold.sim[rows], added, self.top_k, self.unavailable)
        neighbours = sorted({n for items, _ in lists for n in items} - set(added))
        lists += self.similar_lists(index, neighbours)
        self._write(index, added + neighbours, lists, now_ms)

    def similar_lists(self, index: ServingIndex, items: list[str]) -> list[tuple[list[str], list[float]]]:
        """Similar-items lists of ``items`` (the model's or cold ones), unavailable items left out."""
        return index.similar_items(items, self.top_k, self.unavailable)

    def _write(
        self, index: ServingIndex, owners: list[str], lists: list[tuple[list[str], list[float]]], now_ms: int
    ) -> None:
        pipe = self.topology.client.pipeline(transaction=False)
        for owner, (items, scores) in zip(owners, lists, strict=True):
            pipe.set(self.keys.sim(owner), SimilarList(owner, items, scores, index.version, now_ms).to_json())
        pipe.execute()

    def _sweep_page(self, index: ServingIndex | None, now_ms: int) -> None:
        """One page of the sweep; similar-items lists found holding unavailable items are rewritten."""
        stale = self.sweep.step()
        if stale and index is not None:
            known = [i for i in stale if index.knows(i)]
            self._write(index, known, self.similar_lists(index, known), now_ms)


def _empty(index: ServingIndex) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    return (
        np.zeros((0, index.rec_vectors.shape[1]), np.float32),
        np.zeros((0, index.sim_vectors.shape[1]), np.float32),
    )
