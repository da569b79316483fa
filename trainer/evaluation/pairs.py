"""Item-pair AUC-ROC: seed 001's (recsys-nlp-graph) evaluation, on interaction logs.

Seed 001 scored product pairs: its edges (Amazon "bought together", "also
bought", "also viewed") were deduplicated, a share of them held out, every
model trained on the rest, and each held-out edge scored against as many random
product pairs by the similarity of the two products' vectors; the figure is
AUC-ROC. Here, on a log of user events:

* **Pairs.** Two items a user had as *consecutive positive events* (time
  order, ties in log order), undirected (stored ``(lo, hi)``), deduplicated; an
  item followed by itself is no pair. This is the log's nearest analogue of a
  "bought together" edge, and keeps the pair count near the event count (every
  pair of a user's positives would make ML-100K's item graph nearly complete).
* **Split.** A seeded share of *users* is held out whole; models train on the
  other users' events only. The seed split its edges at random, which a model
  trained on event sequences cannot honour (one event belongs to two pairs);
  holding out users keeps every held-out pair's events out of training.
* **Positives.** Distinct pairs of held-out users whose two items both have a
  training positive (the seed's "seen products", ``filter_out_unseen``) and
  that are not a training pair (in the seed a held-out edge is never a training
  edge). Held-out pairs that are also training pairs are kept apart: they give
  the second figure, ``auc_all`` (all held-out pairs against the same negatives).
* **Negatives.** As many as positives: two distinct items drawn *uniformly*
  from the items of the positive pairs (the seed's ``create_negative_edges``),
  redrawn while the pair is a pair of any user, training or held out.
* **Score.** Cosine of the two items' vectors (zero vectors score 0); AUC is the
  Mann-Whitney U statistic, ties counting one half (``metrics.auc``). Uniform
  negatives are pairs of rarer items than the positives (on ML-100K the median
  training count of a pair's rarer item is 8 against 28), so a model whose
  cosine rises for rare items scores below its ranking quality; ``pair_auc``
  also reports the AUC of the vectors less the trained items' mean row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.evaluation.metrics import auc
from trainer.interactions import FloatArray, IntArray, Interactions

HOLDOUT_USERS = 0.2
"""Share of users whose pairs are held out (their events are never trained on)."""
NEGATIVE_DRAW_ROUNDS = 50
"""Rounds of rejection sampling before ``sample_negatives`` gives up (each round draws 2x what is missing)."""


def pair_keys(pairs: npt.ArrayLike, n_items: int) -> IntArray:
    """(P,) one int64 per undirected pair: ``lo * n_items + hi`` of (P, 2) item indices."""
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    lo, hi = np.minimum(p[:, 0], p[:, 1]), np.maximum(p[:, 0], p[:, 1])
    keys: IntArray = lo * np.int64(n_items) + hi
    return keys


def consecutive_pairs(data: Interactions) -> tuple[IntArray, IntArray]:
    """(users (P,), pairs (P, 2)): each user's consecutive positives in time order as ``(lo, hi)``.

    Not deduplicated; a repeat of the same item gives no pair.
    """
    pos = data.positives()
    order = np.lexsort((np.arange(len(pos)), pos.ts, pos.users))  # by user, then time, then log order
    users, items = pos.users[order].astype(np.int64), pos.items[order].astype(np.int64)
    same_user = users[1:] == users[:-1]
    a, b = items[:-1], items[1:]
    keep = same_user & (a != b)
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)[keep]  # (P, 2)
    return users[:-1][keep], pairs.reshape(-1, 2)


def unique_pairs(pairs: npt.ArrayLike, n_items: int) -> IntArray:
    """(Q, 2) the distinct undirected pairs of (P, 2) ``pairs``, as ``(lo, hi)`` sorted by key."""
    keys = np.unique(pair_keys(pairs, n_items))
    out: IntArray = np.stack([keys // n_items, keys % n_items], axis=1)
    return out


def holdout_users(data: Interactions, frac: float = HOLDOUT_USERS, seed: int = 0) -> tuple[Interactions, Interactions]:
    """(train, held): every event of a seeded ``round(frac * users with events)`` users goes to ``held``."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), not {frac}")
    active = np.unique(data.users)
    rng = np.random.default_rng(seed)
    n_held = max(1, round(frac * len(active)))
    held_users = rng.choice(active, n_held, replace=False)
    mask = np.isin(data.users, held_users)
    return data.select(~mask), data.select(mask)


@dataclass(frozen=True)
class PairTest:
    """The held-out pairs of one split and their negatives; all (n, 2) item indices ``(lo, hi)``."""

    positives: IntArray  # held-out pairs, both items trained, not a training pair
    seen: IntArray  # held-out pairs, both items trained, also a training pair
    negatives: IntArray  # uniform random pairs of the positives' items, no one's pair
    dropped_unseen: int  # held-out pairs with an item that has no training positive
    trained: npt.NDArray[np.bool_]  # (n_items,) items with a training positive

    def counts(self) -> dict[str, int]:
        return {
            "positives": len(self.positives),
            "seen": len(self.seen),
            "negatives": len(self.negatives),
            "dropped_unseen": self.dropped_unseen,
        }


def build_pair_test(data: Interactions, *, frac: float = HOLDOUT_USERS, seed: int = 0) -> tuple[Interactions, PairTest]:
    """(training events, held-out pairs with negatives) of ``data``: the protocol of the module docstring."""
    train, held = holdout_users(data, frac, seed)
    n = data.n_items
    train_keys = np.unique(pair_keys(consecutive_pairs(train)[1], n))
    held_pairs = unique_pairs(consecutive_pairs(held)[1], n)
    trained = train.positives().item_counts() > 0  # (n_items,)
    known = trained[held_pairs[:, 0]] & trained[held_pairs[:, 1]]
    in_train = np.isin(pair_keys(held_pairs, n), train_keys)
    positives, seen = held_pairs[known & ~in_train], held_pairs[known & in_train]
    if not len(positives):
        raise ValueError("build_pair_test: no held-out pair of trained items that is not a training pair")
    every_pair = np.union1d(train_keys, pair_keys(held_pairs, n))
    rng = np.random.default_rng([seed, 1])
    negatives = sample_negatives(np.unique(positives), len(positives), every_pair, n, rng)
    return train, PairTest(positives, seen, negatives, int((~known).sum()), trained)


def sample_negatives(
    items: npt.ArrayLike, count: int, exclude_keys: npt.ArrayLike, n_items: int, rng: np.random.Generator
) -> IntArray:
    """(count, 2) pairs ``(lo, hi)`` of two distinct items drawn uniformly from ``items``, none in ``exclude_keys``.

    Negatives may repeat (as the seed's may). ValueError if ``NEGATIVE_DRAW_ROUNDS`` rounds do not find enough.
    """
    pool = np.asarray(items, np.int64)
    excluded = np.unique(np.asarray(exclude_keys, np.int64))
    found: list[IntArray] = []
    missing = count
    for _ in range(NEGATIVE_DRAW_ROUNDS):
        if missing <= 0:
            break
        draw = pool[rng.integers(0, len(pool), (2 * missing, 2))] if len(pool) else np.zeros((0, 2), np.int64)
        draw = draw[draw[:, 0] != draw[:, 1]]
        draw = draw[~np.isin(pair_keys(draw, n_items), excluded)][:missing]
        found.append(np.sort(draw, axis=1))
        missing -= len(draw)
    if missing > 0:
        raise ValueError(f"sample_negatives: found {count - missing} of {count} pairs outside the excluded ones")
    return np.concatenate(found).reshape(-1, 2)


def cosine(vectors: npt.ArrayLike, pairs: npt.ArrayLike) -> FloatArray:
    """(P,) cosine of the rows of each pair in (n_items, d) ``vectors``; a zero row scores 0."""
    v = np.asarray(vectors, np.float32)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # (n_items, d)
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    out: FloatArray = np.einsum("nd,nd->n", unit[p[:, 0]], unit[p[:, 1]]).astype(np.float32)
    return out


def aligned_vectors(vectors: npt.ArrayLike, model_ids: list[str], item_ids: list[str]) -> FloatArray:
    """(len(item_ids), d) rows of a model's (len(model_ids), d) ``vectors`` in ``item_ids`` order; zeros if unknown."""
    v = np.asarray(vectors, np.float32)
    if len(v) != len(model_ids):
        raise ValueError(f"{len(v)} vectors for {len(model_ids)} model items")
    row = {item: i for i, item in enumerate(model_ids)}
    out = np.zeros((len(item_ids), v.shape[1]), np.float32)
    src = np.fromiter((row.get(item, -1) for item in item_ids), np.int64, len(item_ids))
    out[src >= 0] = v[src[src >= 0]]
    return out


def centered(vectors: npt.ArrayLike, rows: npt.NDArray[np.bool_]) -> FloatArray:
    """(n_items, d) ``vectors`` less the mean of the ``rows`` (an (n_items,) mask, e.g. the trained items)."""
    v = np.asarray(vectors, np.float32)
    out: FloatArray = (v - v[rows].mean(axis=0)).astype(np.float32) if rows.any() else v.copy()
    return out


def pair_auc(vectors: npt.ArrayLike, test: PairTest) -> dict[str, float]:
    """The figures of one model's item ``vectors`` (rows in the test's item order).

    ``auc``: positives vs negatives (the seed's figure); ``auc_all``: positives and seen pairs vs the same
    negatives; ``auc_centered``: ``auc`` of the vectors less the trained items' mean row (a diagnostic:
    skip-gram vectors share one direction, rare items' most, and uniform negatives are pairs of rarer items).
    """
    pos, neg = cosine(vectors, test.positives), cosine(vectors, test.negatives)
    both = np.concatenate([pos, cosine(vectors, test.seen)])
    shifted = centered(vectors, test.trained)
    centered_auc = auc(cosine(shifted, test.positives), cosine(shifted, test.negatives))
    return {"auc": auc(pos, neg), "auc_all": auc(both, neg), "auc_centered": centered_auc}
