"""Reference recommenders to measure recd's models against, all as ``Scorer``s.

* ``popularity`` - positive train rows per item;
* ``als`` - implicit's CPU AlternatingLeastSquares (Hu, Koren & Volinsky);
* ``bpr`` - implicit's CPU BayesianPersonalizedRanking;
* ``gensim`` - gensim Word2Vec skip-gram item2vec over each user's positives
  (time order), user vector = mean of their item vectors.

implicit and gensim are dev dependencies: imported inside the functions only.
implicit warns when BLAS runs its own thread pool; the fits run inside a
``threadpoolctl`` limit of one BLAS thread, which is lifted afterwards (no
process-wide setting changes).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from trainer.evaluation.scoring import Scorer
from trainer.evaluation.tuning import BOUNDS, EXTRA_FITS, tune
from trainer.interactions import FloatArray, Int32Array, Interactions

BASELINES = ("popularity", "als", "bpr", "gensim")
# Defaults picked on validation splits of ML-100K (leave-latest-out) and Amazon-Beauty (its valid file);
# ``tune_baseline`` searches TUNING_GRIDS per dataset instead.
ALS_DEFAULTS: dict[str, Any] = {"factors": 128, "regularization": 20.0, "alpha": 20.0, "iterations": 15}
BPR_DEFAULTS: dict[str, Any] = {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}
GENSIM_DEFAULTS: dict[str, Any] = {"vector_size": 64, "window": 3, "negative": 10, "epochs": 10, "sample": 0.0}
TUNING_GRIDS: dict[str, dict[str, list[Any]]] = {
    "als": {"factors": [64, 128, 256], "alpha": [2.0, 10.0, 50.0, 250.0], "regularization": [5.0, 20.0]},
    "bpr": {"learning_rate": [0.01, 0.05], "iterations": [100, 300]},
    "gensim": {"epochs": [3, 10, 30]},
}


class PopularityScorer:
    """Every user gets the train popularity of each item."""

    def __init__(self, train: Interactions) -> None:
        self.name = "popularity"
        self.counts = train.positives().item_counts().astype(np.float32)  # (n_items,)

    def score(self, users: Int32Array) -> FloatArray:
        return np.tile(self.counts, (len(users), 1))  # (B, n_items)


class FactorScorer:
    """``user_factors[users] @ item_factors.T``; ``item_vectors`` are the item factors."""

    def __init__(
        self, name: str, user_factors: FloatArray, item_factors: FloatArray, item_vectors: FloatArray | None = None
    ) -> None:
        self.name = name
        self.user_factors = np.ascontiguousarray(user_factors, np.float32)  # (n_users, d)
        self.item_factors = np.ascontiguousarray(item_factors, np.float32)  # (n_items, d)
        self._item_vectors = self.item_factors if item_vectors is None else item_vectors

    def score(self, users: Int32Array) -> FloatArray:
        return np.asarray(self.user_factors[users] @ self.item_factors.T, np.float32)  # (B, n_items)

    def item_vectors(self) -> FloatArray:
        return np.asarray(self._item_vectors, np.float32)


def _user_items(train: Interactions) -> Any:
    """(n_users, n_items) scipy CSR of positive weights (repeats summed)."""
    import scipy.sparse

    pos = train.positives()
    return scipy.sparse.csr_matrix(
        (pos.weights.astype(np.float32), (pos.users, pos.items)), shape=(train.n_users, train.n_items)
    )


def fit_als(train: Interactions, *, seed: int = 0, threads: int = 2, **params: Any) -> FactorScorer:
    """implicit ALS on the positive rows (``ALS_DEFAULTS`` overridden by ``params``)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            **{**ALS_DEFAULTS, **params}, num_threads=threads, random_state=seed, dtype=np.float32
        )
        model.fit(_user_items(train), show_progress=False)
    return FactorScorer("als", model.user_factors, model.item_factors)


def fit_bpr(train: Interactions, *, seed: int = 0, threads: int = 2, **params: Any) -> FactorScorer:
    """implicit BPR on the positive rows (``BPR_DEFAULTS`` overridden by ``params``).

    implicit appends a bias column to the item factors (and a column of ones to
    the user factors); the item vectors for cosine leave it out.
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(
            **{**BPR_DEFAULTS, **params}, num_threads=threads, random_state=seed, dtype=np.float32
        )
        model.fit(_user_items(train), show_progress=False)
    items = np.asarray(model.item_factors, np.float32)  # (n_items, d + 1), last column the bias
    return FactorScorer("bpr", model.user_factors, items, item_vectors=items[:, :-1])


def _crc_hash(text: str) -> int:
    """Deterministic replacement for ``hash`` (gensim seeds each word vector from it)."""
    return zlib.crc32(text.encode())


def user_sentences(train: Interactions) -> list[list[str]]:
    """Each user's positive items in time order (stable), as lists of item-index strings."""
    pos = train.positives()
    order = np.lexsort((np.arange(len(pos)), pos.ts, pos.users))
    users, items = pos.users[order], pos.items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return [[str(i) for i in chunk.tolist()] for chunk in np.split(items, bounds) if len(chunk)]


def fit_gensim(train: Interactions, *, seed: int = 0, threads: int = 1, **params: Any) -> FactorScorer:
    """gensim skip-gram item2vec (``GENSIM_DEFAULTS`` overridden by ``params``).

    One worker by default so the result is a function of the seed. Items
    gensim never saw keep zero vectors; the user vector is the mean of the
    user's train positives' vectors.
    """
    from gensim.models import Word2Vec

    sentences = user_sentences(train)
    model = Word2Vec(
        sentences=sentences,
        sg=1,
        min_count=1,
        workers=threads,
        seed=seed,
        hashfxn=_crc_hash,
        **{**GENSIM_DEFAULTS, **params},
    )
    items = np.zeros((train.n_items, model.wv.vector_size), np.float32)  # (n_items, d)
    known = [int(w) for w in model.wv.index_to_key]
    items[known] = model.wv.vectors
    pos = train.positives()
    sums = np.zeros((train.n_users, items.shape[1]), np.float32)  # (n_users, d)
    np.add.at(sums, pos.users, items[pos.items])
    counts = np.bincount(pos.users, minlength=train.n_users).astype(np.float32)
    users = (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)  # (n_users, d) mean item vector
    return FactorScorer("gensim", users, items)


def make_baseline(name: str, train: Interactions, *, seed: int = 0, **params: Any) -> Scorer:
    """Fit the named baseline (one of ``BASELINES``) on ``train`` and return its Scorer."""
    fitters: dict[str, Callable[..., FactorScorer]] = {"als": fit_als, "bpr": fit_bpr, "gensim": fit_gensim}
    if name == "popularity":
        return PopularityScorer(train)
    if name not in fitters:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return fitters[name](train, seed=seed, **params)


def tune_baseline(
    name: str,
    train: Interactions,
    *,
    seed: int = 0,
    max_users: int = 5000,
    grid: dict[str, list[Any]] | None = None,
    valid: Interactions | None = None,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Pick the baseline's parameters by validation Recall@20 inside ``train`` (see ``tune``), going past the
    grid's edges as a preset's search does."""
    grid = TUNING_GRIDS.get(name, {}) if grid is None else grid

    return tune(
        lambda part, params: make_baseline(name, part, seed=seed, **params),
        train,
        grid,
        seed=seed,
        max_users=max_users,
        valid=valid,
        extend=EXTRA_FITS,
        bounds=BOUNDS,
    )
