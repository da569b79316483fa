"""Ranking metrics on plain arrays (no models, no data loading).

Conventions: ``ranked`` is (n_users, K) item indices, best first; a user's
relevant items are rows of an ``ItemSets`` (CSR-like). Recall@K divides the
hits in the top K by the number of relevant items (the standard definition,
as in RecBole and LightGCN); NDCG@K uses binary gains, ``1/log2(rank + 2)``
with 0-based ranks, normalised by the ideal DCG of ``min(K, n_relevant)`` hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ItemSets:
    """One set of item indices per row: row r is ``items[indptr[r]:indptr[r + 1]]``."""

    indptr: I64  # (n_rows + 1,)
    items: I64  # (nnz,)

    @classmethod
    def from_pairs(cls, rows: npt.ArrayLike, items: npt.ArrayLike, n_rows: int) -> ItemSets:
        """Group (row, item) pairs; duplicates are dropped, items sorted within a row."""
        r = np.asarray(rows, np.int64)
        i = np.asarray(items, np.int64)
        if len(r):
            pairs = np.unique(np.stack([r, i], axis=1), axis=0)  # (nnz, 2) sorted by row then item
            r, i = pairs[:, 0], pairs[:, 1]
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        return cls(indptr, np.ascontiguousarray(i))

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> ItemSets:
        rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        items = np.fromiter((i for x in lists for i in x), np.int64)
        return cls.from_pairs(rows, items, len(lists))

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> I64:
        return np.diff(self.indptr)

    def row(self, r: int) -> I64:
        return self.items[self.indptr[r] : self.indptr[r + 1]]

    def take(self, rows: npt.ArrayLike) -> ItemSets:
        """The sets of the given rows, in that order, as a new ItemSets."""
        sel = np.asarray(rows, np.int64)
        lens = self.lengths()[sel]
        starts = self.indptr[sel]
        indptr = np.zeros(len(sel) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        offsets = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1], lens)  # position inside each row
        return ItemSets(indptr, self.items[np.repeat(starts, lens) + offsets])

    def row_ids(self) -> I64:
        """(nnz,) the row of each stored item."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.lengths())

    def contains(self, rows: npt.ArrayLike, items: npt.ArrayLike, n_items: int) -> Bools:
        """Elementwise: is ``items[...]`` in the set of ``rows[...]``? (broadcast shapes)."""
        keys = np.sort(self.row_ids() * n_items + self.items)  # (nnz,) one key per (row, item)
        query = np.asarray(rows, np.int64) * n_items + np.asarray(items, np.int64)
        pos = np.searchsorted(keys, query)
        pos = np.minimum(pos, max(len(keys) - 1, 0))
        return np.asarray(keys[pos] == query, np.bool_) if len(keys) else np.zeros(query.shape, np.bool_)


def top_k(scores: npt.NDArray[np.floating], k: int) -> I64:
    """(n, k) indices of the k largest scores per row, best first; equal scores by lower index.

    Uses ``torch.topk`` (an order of magnitude faster than ``np.argpartition``
    on (1024, 57k) blocks); which of several items tied at the k-th score make
    the cut is up to torch.
    """
    block = np.ascontiguousarray(scores, np.float32)  # (n, n_items)
    k = min(k, block.shape[1])
    values, idx = torch.from_numpy(block).topk(k, dim=1, largest=True, sorted=True)
    vals, part = values.numpy(), idx.numpy().astype(np.int64)  # (n, k) each
    order = np.lexsort((part, -vals), axis=1)  # by score desc, then index asc
    return np.asarray(np.take_along_axis(part, order, axis=1), np.int64)


def hits_at(ranked: npt.ArrayLike, relevant: ItemSets, n_items: int) -> Bools:
    """(n, K) bool: is ranked[u, j] one of user u's relevant items (row u of ``relevant``)."""
    r = np.asarray(ranked, np.int64)
    rows = np.arange(r.shape[0], dtype=np.int64)[:, None]
    return relevant.contains(rows, r, n_items)


def recall_at_k(hits: Bools, n_relevant: npt.ArrayLike, k: int) -> F64:
    """(n,) hits in the top k / number of relevant items (0 where a user has none)."""
    n_rel = np.asarray(n_relevant, np.float64)
    found = hits[:, :k].sum(axis=1).astype(np.float64)
    return np.asarray(np.divide(found, n_rel, out=np.zeros_like(found), where=n_rel > 0), np.float64)


def ndcg_at_k(hits: Bools, n_relevant: npt.ArrayLike, k: int) -> F64:
    """(n,) binary-gain NDCG@k (0 where a user has no relevant items)."""
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)  # (k,)
    h = hits[:, :k]
    dcg = (h * discounts[: h.shape[1]]).sum(axis=1)
    ideal_n = np.minimum(np.asarray(n_relevant, np.int64), k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_n]
    return np.asarray(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0), np.float64)


def _tie_positions(pos: F64, neg: F64) -> tuple[I64, I64]:
    """Per row: how many negatives score above the positive, and how many tie with it."""
    p = pos[:, None]
    return (neg > p).sum(axis=1), (neg == p).sum(axis=1)


def _sampled(pos_scores: npt.ArrayLike, neg_scores: npt.ArrayLike, k: int, ndcg: bool) -> F64:
    """Expected HR@k or NDCG@k of the positive among itself + negatives, ties broken at random."""
    pos = np.asarray(pos_scores, np.float64)
    neg = np.asarray(neg_scores, np.float64)
    above, ties = _tie_positions(pos, neg)
    ranks = np.arange(neg.shape[1] + 1)  # every 0-based rank the positive could take
    possible = (ranks >= above[:, None]) & (ranks <= (above + ties)[:, None])  # (n, m + 1)
    gain = (ranks < k) / np.log2(ranks + 2.0) if ndcg else (ranks < k).astype(np.float64)
    return np.asarray((possible * gain).sum(axis=1) / (ties + 1), np.float64)


def hit_rate(pos_scores: npt.ArrayLike, neg_scores: npt.ArrayLike, k: int) -> F64:
    """(n,) is the positive among the top k of itself + its (n, m) negatives (expected, for ties)."""
    return _sampled(pos_scores, neg_scores, k, ndcg=False)


def sampled_ndcg(pos_scores: npt.ArrayLike, neg_scores: npt.ArrayLike, k: int) -> F64:
    """(n,) 1/log2(rank + 2) of the positive among itself + negatives if rank < k (expected, for ties)."""
    return _sampled(pos_scores, neg_scores, k, ndcg=True)


def auc(pos_scores: npt.ArrayLike, neg_scores: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(random positive > random negative), ties count one half."""
    pos = np.asarray(pos_scores, np.float64).ravel()
    neg = np.asarray(neg_scores, np.float64).ravel()
    if not len(pos) or not len(neg):
        raise ValueError("auc needs at least one positive and one negative score")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    sorted_scores = both[order]
    ranks = np.empty(len(both), np.float64)
    # average 1-based rank over each group of tied scores
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def catalog_coverage(ranked: npt.ArrayLike, n_items: int) -> float:
    """Distinct items appearing in any list / n_items."""
    r = np.asarray(ranked, np.int64)
    return float(len(np.unique(r)) / n_items) if n_items else 0.0


def tail_items(popularity: npt.ArrayLike, head_fraction: float = 0.2) -> Bools:
    """(n_items,) True for the least popular (1 - head_fraction) of items.

    The head is the ``ceil(head_fraction * n_items)`` most popular items (ties
    at the boundary go to the lower item index).
    """
    pop = np.asarray(popularity, np.float64)
    n_head = int(np.ceil(head_fraction * len(pop)))
    order = np.lexsort((np.arange(len(pop)), -pop))  # most popular first
    tail = np.ones(len(pop), np.bool_)
    tail[order[:n_head]] = False
    return tail


def tail_share(ranked: npt.ArrayLike, popularity: npt.ArrayLike, head_fraction: float = 0.2) -> float:
    """Fraction of recommended slots holding a tail item (see ``tail_items``)."""
    r = np.asarray(ranked, np.int64)
    if r.size == 0:
        return 0.0
    return float(tail_items(popularity, head_fraction)[r].mean())
