"""The cold-item protocol: can a model recommend items it has never seen an interaction of?

* **Split.** A seeded ``COLD_SHARE`` of the items with a positive event is held
  out *entirely*: every event of theirs goes to the test side, the model trains
  on the other items' events only (its id map holds only those). Their
  attributes stay known, as a catalogue would publish them before any event.
* **Test users.** Users with a positive on a cold item and at least one
  training positive (a query needs a history). Each user's relevant items are
  their positive cold items.
* **Ranking.** Every test user ranks the cold items only (all of them; none can
  be "already seen" in training). Recall@K = hits in the top K / relevant cold
  items, averaged over test users (``metrics.recall_at_k``), NDCG@K beside it.
* **Scorers.** A model (``side_info``, ``ials``): the user's query vector
  (from their training positives, equal weights) times each cold item's row
  placed from its attributes as serving places it (the attribute map,
  ``trainer.attribute_vectors``), or by ``side_info``'s own attribute
  embeddings (``SideInfo.vectors_for_attributes``). Baselines, all but the last two the
  same for every user: ``attribute_popularity`` - the training popularity of
  the warm items sharing the cold item's values, averaged with weights = the
  Jaccard similarity of the two items' value sets (the strongest of these on
  ML-100K); ``attribute_popularity_knn`` - the mean popularity of the
  ``KNN`` warm items most Jaccard-similar to it; ``attribute_popularity_value`` -
  the mean over its values of the average popularity of the warm items carrying
  the value (weak where items have many rare values: knowledge-graph links);
  ``attribute_match`` - a personal content baseline: the user's share of history
  items carrying each value, dotted with the cold item's values; ``random``.
  The baselines build dense (cold x warm) and (items x values) matrices: sized
  for the evaluation datasets, not for a production catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.attribute_vectors import AttributeVectors
from trainer.attributes import ItemAttributes
from trainer.evaluation.metrics import ItemSets, hits_at, ndcg_at_k, recall_at_k, top_k
from trainer.interactions import FloatArray, IntArray, Interactions
from trainer.models.base import History

COLD_SHARE = 0.2
"""Share of the items with a positive event held out whole."""
K = 20
"""Cut-off of the reported recall and NDCG."""
KNN = 10
"""Neighbours of ``attribute_popularity_knn``."""
POPULARITY_BASELINES = ("attribute_popularity", "attribute_popularity_knn", "attribute_popularity_value")
BASELINES = (*POPULARITY_BASELINES, "attribute_match", "random")


@dataclass(frozen=True)
class ColdSplit:
    """Training events over the warm items and the held-out cold items' test sets."""

    train: Interactions  # events of warm items only; item_ids = the warm items
    cold_ids: list[str]  # the held-out items, in the order of ``relevant``'s item indices
    users: IntArray  # (U,) test users, as indices into train.user_ids
    relevant: ItemSets  # row u: the cold indices user ``users[u]`` had a positive on
    history: ItemSets  # row u: that user's training positives (indices into train.item_ids)


def split_cold_items(data: Interactions, *, share: float = COLD_SHARE, seed: int = 0) -> ColdSplit:
    """The protocol's split of ``data`` (see the module docstring)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), not {share}")
    pos = data.positives()
    eligible = np.flatnonzero(pos.item_counts() > 0)
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(eligible, max(1, round(share * len(eligible))), replace=False))
    is_cold = np.zeros(data.n_items, np.bool_)
    is_cold[cold] = True
    warm = np.flatnonzero(~is_cold)
    to_warm = np.full(data.n_items, -1, np.int64)
    to_warm[warm] = np.arange(len(warm))
    kept = data.select(~is_cold[data.items])
    train = Interactions(
        kept.users,
        to_warm[kept.items].astype(np.int32),
        kept.weights,
        kept.values,
        kept.ts,
        data.user_ids,
        [data.item_ids[i] for i in warm],
    )
    to_cold = np.full(data.n_items, -1, np.int64)
    to_cold[cold] = np.arange(len(cold))
    tested = pos.select(is_cold[pos.items])
    trained = train.positives()
    has_history = np.bincount(trained.users, minlength=data.n_users) > 0
    users = np.unique(tested.users[has_history[tested.users]]).astype(np.int64)
    row_of = np.full(data.n_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    keep_t, keep_h = row_of[tested.users] >= 0, row_of[trained.users] >= 0
    relevant = ItemSets.from_pairs(row_of[tested.users[keep_t]], to_cold[tested.items[keep_t]], len(users))
    history = ItemSets.from_pairs(row_of[trained.users[keep_h]], trained.items[keep_h], len(users))
    return ColdSplit(train, [data.item_ids[i] for i in cold], users, relevant, history)


def ranking_figures(scores: npt.ArrayLike, split: ColdSplit, k: int = K) -> dict[str, float]:
    """Mean recall@k and NDCG@k of (U, n_cold) ``scores`` over the test users."""
    s = np.asarray(scores, np.float32)
    n_cold = len(split.cold_ids)
    ranked = top_k(s, k)
    hits = hits_at(ranked, split.relevant, n_cold)
    n_rel = split.relevant.lengths()
    return {
        f"recall@{k}": float(recall_at_k(hits, n_rel, k).mean()),
        f"ndcg@{k}": float(ndcg_at_k(hits, n_rel, k).mean()),
    }


def histories(split: ColdSplit, model_ids: list[str]) -> list[History]:
    """Each test user's training positives as a ``History`` over a model's rows (equal weights)."""
    row = {item: i for i, item in enumerate(model_ids)}
    to_model = np.fromiter((row.get(i, -1) for i in split.train.item_ids), np.int64, len(split.train.item_ids))
    out = []
    for u in range(len(split.users)):
        items = to_model[split.history.row(u)]
        items = items[items >= 0]
        out.append(History(items, np.ones(len(items), np.float32)))
    return out


def model_scores(
    model: Any,
    split: ColdSplit,
    attributes: ItemAttributes,
    *,
    own: bool = False,
    placer: AttributeVectors | None = None,
) -> FloatArray:
    """(U, n_cold) query rows of a fitted model times the cold items' rows placed by their attributes as
    serving places them (``AttributeVectors``: the attribute map); ``own``: by ``side_info``'s own attribute
    embeddings instead (``SideInfo.vectors_for_attributes``); ``placer``: one already fitted for ``model``. An
    item that cannot be placed scores 0."""
    query = np.asarray(model.query_vectors(histories(split, model.item_ids)), np.float32)  # (U, d)
    cold_attributes = attributes.align(split.cold_ids)
    if own:
        cold = np.asarray(model.vectors_for_attributes(cold_attributes), np.float32)  # (n_cold, d)
    else:
        placed = (placer or AttributeVectors.of(model, attributes)).place(cold_attributes)
        cold = np.zeros((len(split.cold_ids), query.shape[1]), np.float32)
        cold[placed.rows] = placed.rec
    return np.asarray(query @ cold.T, np.float32)


def value_matrix(attributes: ItemAttributes, item_ids: list[str], n_values: int) -> FloatArray:
    """(len(item_ids), n_values) each item's values, each row averaging to 1 over its values (0 rows: none)."""
    aligned = attributes.align(item_ids)
    out = np.zeros((len(item_ids), n_values), np.float32)
    share = 1.0 / np.maximum(aligned.lengths(), 1)
    np.add.at(out, (aligned.owners(), aligned.values), share[aligned.owners()])
    return out


def baseline_scores(name: str, split: ColdSplit, attributes: ItemAttributes, seed: int = 0) -> FloatArray:
    """(U, n_cold) scores of baseline ``name`` (one of ``BASELINES``)."""
    n_users, n_cold, n_values = len(split.users), len(split.cold_ids), len(attributes.value_names)
    if name == "random":
        return np.random.default_rng([seed, 7]).random((n_users, n_cold)).astype(np.float32)
    warm = value_matrix(attributes, split.train.item_ids, n_values) > 0  # (n_warm, V)
    cold = value_matrix(attributes, split.cold_ids, n_values)  # (n_cold, V) mean over values
    if name == "attribute_match":
        profile = np.zeros((n_users, split.train.n_items), np.float32)
        profile[np.repeat(np.arange(n_users), split.history.lengths()), split.history.items] = 1.0
        shares = profile @ warm / np.maximum(split.history.lengths(), 1)[:, None]  # (U, V)
        return np.asarray(shares @ cold.T, np.float32)
    popularity = split.train.positives().item_counts().astype(np.float64)  # (n_warm,)
    if name == "attribute_popularity_value":
        total, carriers = popularity @ warm, warm.sum(axis=0)  # (V,) positives / warm items per value
        item_scores = cold @ np.divide(total, carriers, out=np.zeros_like(total), where=carriers > 0)  # (n_cold,)
    elif name in ("attribute_popularity", "attribute_popularity_knn"):
        similar = jaccard(cold > 0, warm)  # (n_cold, n_warm)
        if name.endswith("_knn"):
            item_scores = popularity[np.argsort(-similar, axis=1, kind="stable")[:, :KNN]].mean(axis=1)
        else:
            item_scores = (similar @ popularity) / np.maximum(similar.sum(axis=1), 1e-12)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return np.broadcast_to(item_scores.astype(np.float32), (n_users, n_cold)).copy()


def jaccard(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> FloatArray:
    """(len(a), len(b)) Jaccard similarity of the rows of two (n, n_values) bool matrices (0 for two empty rows)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(axis=1)[:, None] + fb.sum(axis=1)[None, :] - inter
    return np.asarray(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), np.float32)
