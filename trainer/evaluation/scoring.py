"""Scoring models: scorers and the batched metrics loop over a train/test split.

Metrics (see ``trainer.evaluation.metrics`` for definitions), all over the dataset's item
index space:

* full ranking - Recall@K and NDCG@K over every item the user has no train
  row for (the trustworthy protocol), K in ``ks``;
* sampled - HR@10 and NDCG@10 of each held-out positive ranked against 99
  items the user never interacted with (NCF paper protocol; seeded);
* ``coverage`` (distinct items in the top-``list_k`` lists / n_items) and
  ``tail_share`` (share of list slots holding one of the 80% least popular
  items, popularity = positive train rows);
* optionally ``auc``: pair AUC-ROC of item-item cosine on held-out pairs.

Users are scored in chunks, so memory is bounded by ``chunk_size * n_items``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from trainer.evaluation.metrics import (
    I64,
    ItemSets,
    auc,
    catalog_coverage,
    hit_rate,
    hits_at,
    ndcg_at_k,
    recall_at_k,
    sampled_ndcg,
    tail_share,
    top_k,
)
from trainer.evaluation.splits import holdout_split
from trainer.interactions import FloatArray, Int32Array, Interactions
from trainer.models.base import EmbeddingModel, History

ModelFactory = Callable[[], EmbeddingModel]

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """Scores every dataset item for a batch of dataset user indices."""

    name: str

    def score(self, users: Int32Array) -> FloatArray:
        """(len(users), n_items) float32, higher is better; a fresh array the caller may modify."""
        ...


@runtime_checkable
class HasItemVectors(Protocol):
    """A scorer that also has item vectors for item-item cosine (pair AUC)."""

    def item_vectors(self) -> FloatArray:
        """(n_items, d) float32 rows aligned to the dataset's items (zeros where unknown)."""
        ...


class EmbeddingScorer:
    """Adapter: a recd ``EmbeddingModel`` as a ``Scorer`` over a dataset's items.

    Each user's ``History`` is their train positives in time order (items the
    model does not know are dropped), weight 1 or, with ``half_life_ms``,
    ``0.5 ** (age / half_life)`` measured from the user's latest positive.
    Scores are ``query_vectors @ index_vectors.T`` (or the model's ``score_all``
    where it has one, e.g. NeuMF's MLP tower); items unknown to the model score -inf.
    """

    def __init__(
        self, model: EmbeddingModel, train: Interactions, *, half_life_ms: float | None = None, name: str | None = None
    ) -> None:
        self.name = name or model.kind
        self.model = model
        self.n_items = train.n_items
        index = model.item_index()
        self._to_model = np.array([index.get(i, -1) for i in train.item_ids], np.int64)  # (n_items,) or -1
        self._known = np.flatnonzero(self._to_model >= 0)  # dataset items the model has rows for
        self._indptr, self._items, self._weights = _histories(train, self._to_model, half_life_ms)
        self._index: FloatArray | None = None

    def histories(self, users: npt.ArrayLike) -> list[History]:
        out = []
        for u in np.asarray(users, np.int64).tolist():
            lo, hi = self._indptr[u], self._indptr[u + 1]
            out.append(History(self._items[lo:hi], self._weights[lo:hi]))
        return out

    def score(self, users: Int32Array) -> FloatArray:
        if self._index is None:
            self._index = np.ascontiguousarray(self.model.index_vectors(), np.float32)  # (n_model, d)
        histories = self.histories(users)
        exact = getattr(self.model, "score_all", None)  # a model whose exact score is not an inner product
        if callable(exact):
            model_scores = np.asarray(exact(histories), np.float32)  # (B, n_model)
        else:
            query = np.asarray(self.model.query_vectors(histories), np.float32)  # (B, d)
            model_scores = query @ self._index.T  # (B, n_model)
        out = np.full((len(users), self.n_items), -np.inf, np.float32)  # (B, n_items)
        out[:, self._known] = model_scores[:, self._to_model[self._known]]
        return out

    def item_vectors(self) -> FloatArray:
        sims = np.asarray(self.model.similar_vectors(), np.float32)  # (n_model, d')
        out = np.zeros((self.n_items, sims.shape[1]), np.float32)  # (n_items, d')
        out[self._known] = sims[self._to_model[self._known]]
        return out


def _histories(train: Interactions, to_model: I64, half_life_ms: float | None) -> tuple[I64, I64, FloatArray]:
    """CSR of each user's train positives in time order: (indptr, model item rows, weights)."""
    pos = train.positives()
    rows = to_model[pos.items]
    keep = rows >= 0
    users, rows, ts = pos.users[keep], rows[keep], pos.ts[keep]
    order = np.lexsort((np.arange(len(users)), ts, users))  # by user, then time, then file order
    users, rows, ts = users[order], rows[order], ts[order]
    indptr = np.zeros(train.n_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=train.n_users), out=indptr[1:])
    weights = np.ones(len(rows), np.float32)
    if half_life_ms and len(rows):
        last = np.zeros(train.n_users, np.int64)
        np.maximum.at(last, users, ts)
        weights = np.power(0.5, (last[users] - ts) / half_life_ms).astype(np.float32)
    return indptr, rows.astype(np.int64), weights


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalSets:
    """What the metrics loop needs about a split, as per-user item sets."""

    n_items: int
    train: ItemSets  # every train row (masked out of full ranking)
    test: ItemSets  # test positives the user has no train row for
    seen: ItemSets  # train + test rows (never drawn as sampled negatives)
    popularity: I64  # (n_items,) positive train rows per item
    users: I64  # users evaluated: those with a test positive

    @classmethod
    def build(cls, train: Interactions, test: Interactions, users: npt.ArrayLike | None = None) -> EvalSets:
        n_users, n_items = train.n_users, train.n_items
        tr = ItemSets.from_pairs(train.users, train.items, n_users)
        pos = test.positives()
        new = ~tr.contains(pos.users, pos.items, n_items)
        te = ItemSets.from_pairs(pos.users[new], pos.items[new], n_users)
        seen = ItemSets.from_pairs(np.r_[train.users, test.users], np.r_[train.items, test.items], n_users)
        who = np.flatnonzero(te.lengths() > 0)
        if users is not None:
            who = np.intersect1d(who, np.asarray(users, np.int64))
        return cls(n_items, tr, te, seen, train.positives().item_counts(), who.astype(np.int64))


def sample_negatives(
    rows: I64, seen: ItemSets, n_items: int, m: int, rng: np.random.Generator, max_rounds: int = 50
) -> I64:
    """(len(rows), m) items drawn uniformly from those not in ``seen`` row ``rows[p]`` (with replacement)."""
    draws = rng.integers(0, n_items, (len(rows), m), dtype=np.int64)
    for _ in range(max_rounds):
        bad = seen.contains(rows[:, None], draws, n_items)  # (P, m)
        if not bad.any():
            break
        draws[bad] = rng.integers(0, n_items, int(bad.sum()), dtype=np.int64)
    return draws


def evaluate(
    scorer: Scorer,
    train: Interactions,
    test: Interactions,
    *,
    ks: Sequence[int] = (10, 20),
    list_k: int = 10,
    sampled_k: int = 10,
    n_negatives: int = 99,
    chunk_size: int = 1024,
    seed: int = 0,
    with_auc: bool = False,
    users: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Full-ranking, sampled, coverage and tail metrics of ``scorer`` (see the module docstring).

    ``users`` restricts the evaluated users. Extra keys: ``users`` (evaluated)
    and ``test_pairs`` (held-out positives ranked).
    """
    sets = EvalSets.build(train, test, users)
    rng = np.random.default_rng(seed)
    acc: dict[str, float] = defaultdict(float)
    lists: list[I64] = []
    k_max = max(*ks, list_k)
    for start in range(0, len(sets.users), chunk_size):
        batch = sets.users[start : start + chunk_size]
        scores = _chunk_scores(scorer, batch)  # (B, n_items), ours to modify
        tsets = sets.test.take(batch)
        _sampled_chunk(scores, tsets, sets.seen.take(batch), sets.n_items, n_negatives, sampled_k, rng, acc)
        ranked = _ranked_chunk(scores, sets.train.take(batch), tsets, sets.n_items, ks, k_max, acc)
        lists.append(ranked[:, :list_k])
    n_users, n_pairs = len(sets.users), acc.pop("pairs", 0.0)
    out = {key: val / max(n_pairs if key.endswith("_sampled") else n_users, 1) for key, val in acc.items()}
    out.update(_list_metrics(lists, sets.popularity, sets.n_items, list_k))
    if with_auc and isinstance(scorer, HasItemVectors):
        out["auc"] = pair_auc(scorer.item_vectors(), train, test, seed=seed)
    out["users"], out["test_pairs"] = float(n_users), float(n_pairs)
    return out


def _chunk_scores(scorer: Scorer, batch: I64) -> FloatArray:
    """The scorer's (B, n_items) scores of ``batch`` as a writable float32 array, NaN scored as -inf."""
    scores = np.asarray(scorer.score(batch.astype(np.int32)), np.float32)
    if not scores.flags.writeable:
        scores = scores.copy()
    scores[np.isnan(scores)] = -np.inf
    return scores


def _ranked_chunk(
    scores: FloatArray,
    train: ItemSets,
    tsets: ItemSets,
    n_items: int,
    ks: Sequence[int],
    k_max: int,
    acc: dict[str, float],
) -> I64:
    """Mask the chunk's train rows, rank its top ``k_max`` and accumulate Recall@k / NDCG@k; (B, k_max) items."""
    scores[train.row_ids(), train.items] = -np.inf
    ranked = top_k(scores, k_max)  # (B, k_max)
    hits = hits_at(ranked, tsets, n_items)
    for k in ks:
        acc[f"recall@{k}"] += float(recall_at_k(hits, tsets.lengths(), k).sum())
        acc[f"ndcg@{k}"] += float(ndcg_at_k(hits, tsets.lengths(), k).sum())
    return ranked


def _list_metrics(lists: list[I64], popularity: I64, n_items: int, list_k: int) -> dict[str, float]:
    """``coverage`` and ``tail_share`` of every user's top-``list_k`` list."""
    all_lists = np.concatenate(lists) if lists else np.zeros((0, list_k), np.int64)
    return {"coverage": catalog_coverage(all_lists, n_items), "tail_share": tail_share(all_lists, popularity)}


def _sampled_chunk(
    scores: FloatArray,
    tsets: ItemSets,
    seen: ItemSets,
    n_items: int,
    m: int,
    k: int,
    rng: np.random.Generator,
    acc: dict[str, float],
) -> None:
    """Accumulate HR@k / NDCG@k of each held-out positive against m sampled negatives."""
    rows = tsets.row_ids()  # (P,) chunk row of each held-out positive
    pos = scores[rows, tsets.items]  # (P,)
    negs = sample_negatives(rows, seen, n_items, m, rng)  # (P, m)
    neg = scores[rows[:, None], negs]  # (P, m)
    acc[f"hr@{k}_sampled"] += float(hit_rate(pos, neg, k).sum())
    acc[f"ndcg@{k}_sampled"] += float(sampled_ndcg(pos, neg, k).sum())
    acc["pairs"] += float(len(rows))


def pair_auc(
    vectors: FloatArray, train: Interactions, test: Interactions, *, seed: int = 0, max_pairs: int = 200_000
) -> float:
    """AUC-ROC of item-item cosine: held-out pairs vs random pairs (seed 001's protocol).

    A positive pair is (held-out item, a random train positive of the same
    user): co-consumed, but never seen together in training. Its negative
    partner pairs the held-out item with a uniformly random item. Items with
    zero vectors (unknown to the model) get cosine 0.
    """
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)  # (n_items, d)
    tp = train.positives()
    have = ItemSets.from_pairs(tp.users, tp.items, train.n_users)
    held = test.positives()
    lens = have.lengths()[held.users]
    keep = np.flatnonzero(lens > 0)
    if len(keep) > max_pairs:
        keep = np.sort(rng.choice(keep, max_pairs, replace=False))
    if not len(keep):
        raise ValueError("pair_auc: no held-out positive has a train positive to pair with")
    users, items = held.users[keep], held.items[keep].astype(np.int64)
    partner = have.items[have.indptr[users] + (rng.random(len(users)) * lens[keep]).astype(np.int64)]
    other = rng.integers(0, train.n_items, len(users))
    pos = np.einsum("nd,nd->n", unit[items], unit[partner])  # (P,) cosine of held-out pairs
    neg = np.einsum("nd,nd->n", unit[items], unit[other])  # (P,) cosine of random pairs
    return auc(pos, neg)


def holdout_metrics(
    model: EmbeddingModel, data: Interactions, k: int = 20, max_users: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Cheap held-out quality for the trainer's quality gate.

    ``holdout_split(data, max_users, seed)`` holds out the latest positive of a
    seeded sample of users; the model is scored on them with the rest of
    ``data`` as history. The model should have been fitted on
    ``holdout_split(data, max_users, seed)[0]`` (same arguments): a model fitted
    on all of ``data`` has seen the held-out items and scores too high.
    Returns ``recall@k``, ``ndcg@k``, ``hr@10_sampled``, ``ndcg@10_sampled``,
    ``coverage``, ``tail_share``, ``users``, ``test_pairs``.
    """
    train, test = holdout_split(data, max_users, seed)
    scorer = EmbeddingScorer(model, train)
    return evaluate(scorer, train, test, ks=(k,), seed=seed, chunk_size=gate_chunk(train.n_items))


GATE_CELLS = 1 << 24  # (users x items) scores the gate holds per chunk: 64 MB of float32 per array


def gate_chunk(n_items: int) -> int:
    """Users scored per chunk by ``holdout_metrics``: 512, fewer on a large catalogue (8 at the fewest)."""
    return max(8, min(512, GATE_CELLS // max(1, n_items)))
