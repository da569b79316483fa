"""Making recommendation lists for a batch of users: histories -> user vectors -> ANN -> filter.

Histories arrive as arrays (histories.py); the warm users are folded in and
searched for all at once; users the model cannot serve yet get cold-start
lists (coldstart.py), for which only their profiles are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from daemon.runtime.history import positive_weight_table
from daemon.serve.coldstart import ColdStart, pick_new_item
from daemon.serve.histories import HistoryBatch, PositionMap
from daemon.serve.index import ServingIndex
from schemas.records import RecommendationList
from trainer.models.base import History

NEW_ITEM_DEPTH = 20  # cold items ranked per user beyond the new-item slots (some may be seen)


@dataclass(frozen=True)
class ServeOptions:
    top_k: int  # items per list
    batch: int  # most changed users a step takes
    cold_min_history: int  # fewer positive history items the model knows: a cold-start list
    new_item_slots: int  # slots per list for new items the model lacks
    new_item_window_ms: int  # items first seen this recently are new
    recency_half_life_s: float  # an event's weight in the user vector halves per this much older than the newest
    list_ttl_s: int  # 0: lists never expire
    refresh_window_ms: int  # after a swap, refresh users served this recently (wall time)
    weights: Mapping[str, float]  # by event type (history.event_weight)
    rating_threshold: float
    segment_keys: tuple[str, ...]  # profile attributes forming cold-start segments, coarsest first
    trending_half_life_s: float  # how trending scores decay (cold start merges the shards' scores)


class ListMaker:
    """Builds recommendation lists for a batch of users from their histories and the served index."""

    def __init__(
        self, options: ServeOptions, cold: ColdStart, names: Callable[[Iterable[int]], Mapping[int, str]]
    ) -> None:
        self.options = options
        self.cold = cold
        self.names = names  # item number -> item id (cached by the reader)
        self.code_weight = positive_weight_table(options.weights, options.rating_threshold)
        self._positions: PositionMap | None = None

    def make(
        self,
        index: ServingIndex | None,
        batch: HistoryBatch,
        segments_of: Callable[[list[str]], dict[str, list[str]]],
        excluded: set[str],
        now_ms: int,
    ) -> list[RecommendationList]:
        """Lists for every user of ``batch``: ANN for users with enough positive history the model knows,
        cold start (profile segments, read only for those users) for the rest."""
        weight = batch.decayed_weights(self.code_weight, self.options.recency_half_life_s)
        pos = self._position_map(index).lookup(batch.item, self.names) if index else np.full(len(weight), -1)
        useful = (pos >= 0) & (weight > 0)
        counts = np.bincount(batch.owner()[useful], minlength=len(batch.users))
        is_warm = counts >= max(1, self.options.cold_min_history)  # without a model no position is known
        lists = []
        if index is not None and is_warm.any():
            starts, warm = (np.cumsum(counts) - counts).tolist(), np.flatnonzero(is_warm).tolist()
            useful_pos, useful_w = pos[useful], weight[useful].astype(np.float32)
            histories = [
                History(useful_pos[starts[r] : starts[r] + counts[r]], useful_w[starts[r] : starts[r] + counts[r]])
                for r in warm
            ]  # slices: np.split's per-piece cost was 5% of serving
            lists = self._ann(index, batch, warm, histories, pos, excluded, now_ms)
        cold = np.flatnonzero(~is_warm).tolist()
        segments = segments_of([batch.users[r] for r in cold]) if cold else {}
        version = index.version if index else "none"
        for row in cold:
            user = batch.users[row]
            seen = self._ids(batch.item[batch.bounds[row] : batch.bounds[row + 1]]) | excluded
            items, scores, source = self.cold.for_user(segments.get(user, []), seen, self.options.top_k)
            lists.append(RecommendationList(user, items, scores, source, version, now_ms))
        return lists

    def _position_map(self, index: ServingIndex) -> PositionMap:
        if self._positions is None or self._positions.version != index.version:
            self._positions = PositionMap(index.version, index.item_pos)
        return self._positions

    def _ids(self, numbers: npt.NDArray[np.int64]) -> set[str]:
        if not len(numbers):
            return set()
        listed = numbers.tolist()
        names = self.names(listed)
        return {names[n] for n in listed if n in names}

    def _ann(
        self,
        index: ServingIndex,
        batch: HistoryBatch,
        rows: list[int],
        histories: list[History],
        pos: npt.NDArray[np.int64],
        excluded: set[str],
        now_ms: int,
    ) -> list[RecommendationList]:
        """ANN lists for the users at ``rows``, whose ``histories`` come from ``make``; ``pos`` is each record's
        model position (-1 when unknown): every known one is seen, positive or not."""
        bounds, known = batch.bounds.tolist(), pos >= 0
        known_pos, cut = pos[known], np.concatenate(([0], np.cumsum(known)))[batch.bounds].tolist()
        seen = [known_pos[cut[r] : cut[r + 1]] for r in rows]
        queries = index.model.query_vectors(histories)
        banned = np.asarray([index.item_pos[i] for i in excluded if i in index.item_pos], np.int64)
        found = index.top_unseen_batch(queries, seen, banned, self.options.top_k)
        fresh = self.cold.new_items(index.item_pos, self.options.new_item_window_ms, now_ms)
        slots = self.options.new_item_slots
        since = now_ms - self.options.new_item_window_ms  # only new cold items compete for the slots
        ranked = index.cold.ranked(queries, slots + NEW_ITEM_DEPTH, since) if index.cold is not None and slots else None
        ids, k, out = index.item_ids, self.options.top_k, []
        for j, (row, (positions, scores)) in enumerate(zip(rows, found, strict=True)):
            user, lo, hi = batch.users[row], bounds[row], bounds[row + 1]
            items = [ids[p] for p in positions]
            if len(items) < k:  # a tiny catalogue or a voracious user: pad from trending
                items, scores = self._pad(items, scores, self._ids(batch.item[lo:hi]) | excluded)
            if fresh or ranked:  # new items are ones the model lacks: only those of the user's need names
                mine = ranked[j] if ranked else []
                self._expose_new(user, items, mine, fresh, self._ids(batch.item[lo:hi][~known[lo:hi]]) | excluded)
            out.append(RecommendationList(user, items, scores, "ann", index.version, now_ms))
        return out

    def _pad(self, items: list[str], scores: list[float], seen: set[str]) -> tuple[list[str], list[float]]:
        taken = set(items) | seen
        extra = [i for i, _ in self.cold.popular() if i not in taken][: self.options.top_k - len(items)]
        return items + extra, scores + [0.0] * len(extra)

    def _expose_new(self, user: str, items: list[str], ranked: list[str], fresh: list[str], seen: set[str]) -> None:
        """Give the last ``new_item_slots`` slots of ``items`` (in place) to new items the model lacks: the
        catalogue's cold items the user's vector ranks best (``ranked``), then recently seen ones (``fresh``)."""
        taken = set(items)
        for slot in range(len(items) - min(self.options.new_item_slots, len(items)), len(items)):
            item = next((i for i in ranked if i not in seen and i not in taken), None)
            item = item or pick_new_item(user, fresh, seen, taken)
            if item is None:
                break
            items[slot] = item
            taken.add(item)
