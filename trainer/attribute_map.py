"""A linear map from item attributes to a model's item rows: where a new item with no events goes.

Fitted on the model's own items (their attributes as 0/1 features, their rows as targets) by ridge regression
with an unpenalised intercept (features and targets centred), one solve for all the target columns:

    M = argmin ||(X - x̄) M - (T - t̄)||² + ``ridge`` ||M||²,   row(x) = (x - x̄) M + t̄

so a new item's row is the mean item's, moved by what each of its values predicts over and above the values it
comes with (an "attribute-to-feature mapping", Gantner et al., ICDM 2010). Where the mean of the vectors of the
items sharing a value would let broad values (a genre half the catalogue has) drown the telling ones (a
director), the regression weighs each value by what it explains. The ridge weight is chosen per fit on
held-out items (``choose_ridge``): a catalogue of many rare values (knowledge-graph links) wants a strong one,
a few broad values a weak one. Measured by ``bench.cold_items`` (20% of the
items held out whole, ranked by the users who took them), docs/benchmarks.md "Cold items".

Bounded: only the ``MAX_VALUES`` values the most model items carry (each carried by two at least) are
features, so the normal matrix is at most ``MAX_VALUES``² (8 bytes each) and is accumulated a chunk of items at
a time from the pairs, never as a dense (items x values) matrix. A value carried by a handful of items would
get a weight shrunk towards zero by the ridge anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.attributes import ItemAttributes

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

RIDGES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
"""Ridge weights tried; the one that ranks held-out items best wins (``choose_ridge``; docs/benchmarks.md
"Cold items" gives the weights chosen and the cold-item recall at each)."""
DEFAULT_RIDGE = 100.0  # where too few items can be held out to choose
HELD_OUT = 0.1  # share of the items held out to choose the ridge weight
MAX_HELD_OUT = 5000
MIN_HELD_OUT = 10
MAX_VALUES = 2048
"""Features at most (the most carried values): the normal matrix is 34 MB at this size. On ML-100K (4,112
values carried twice or more) cold-item recall@20 with ials was 0.368 at 2048, 0.370 at 4096, 0.369 at 1024."""
MIN_CARRIERS = 2
CHUNK_PAIRS = 1 << 22  # value pairs (products) accumulated at a time


@dataclass(frozen=True)
class Pairs:
    """The 0/1 (items x features) matrix as (owner, feature) pairs sorted by owner."""

    owners: IntArray
    features: IntArray
    k: int  # features
    n_items: int

    def only(self, rows: npt.NDArray[np.bool_]) -> Pairs:
        keep = rows[self.owners]
        return Pairs(self.owners[keep], self.features[keep], self.k, self.n_items)

    def solve(self, rows: npt.NDArray[np.bool_], targets: list[FloatArray], ridges: tuple[float, ...]) -> Solved:
        """The ridge solutions for the items of ``rows`` (bool over items), one per weight in ``ridges``, each
        (k, total width): the targets' columns side by side, one system for all."""
        part, n = self.only(rows), int(rows.sum())
        counts = np.bincount(part.features, minlength=self.k).astype(np.float64)
        mean = counts / max(n, 1)
        gram = normal_matrix(part.owners, part.features, self.k, self.n_items) - n * np.outer(mean, mean)
        total = [t.sum(axis=0, dtype=np.float64) - t[~rows].sum(axis=0, dtype=np.float64) for t in targets]
        t_mean = np.concatenate(total) / max(n, 1)
        products = [sparse_transpose_product(part.owners, part.features, t, self.k) for t in targets]
        rhs = np.hstack(products) - np.outer(counts, t_mean)
        weights: list[npt.NDArray[np.float64]] = []
        for ridge in ridges:
            system = gram.copy()
            system[np.diag_indices(self.k)] += ridge
            weights.append(np.asarray(np.linalg.solve(system, rhs) if self.k else rhs, np.float64))
        return Solved(mean, weights, t_mean)

    def predict(self, solved: Solved, weights: npt.NDArray[np.float64], rows: IntArray) -> FloatArray:
        """(len(rows), d) the rows predicted for items ``rows`` (sorted item indices; one carrying no feature
        gets the base row)."""
        keep = np.isin(self.owners, rows)
        local = np.searchsorted(rows, self.owners[keep])
        return linear_rows(local, self.features[keep], len(rows), weights, solved.mean, solved.t_mean)


@dataclass(frozen=True)
class Solved:
    mean: npt.NDArray[np.float64]  # (k,) x̄
    weights: list[npt.NDArray[np.float64]]  # per ridge weight: (k, d)
    t_mean: npt.NDArray[np.float64]  # (d,) t̄


@dataclass(frozen=True)
class AttributeMap:
    """The fitted map; ``column`` turns the vocabulary's value index into a feature (-1: not a feature)."""

    value_names: list[str]
    column: IntArray  # (len(value_names),)
    feature_mean: npt.NDArray[np.float64]  # (K,) x̄
    weights: list[FloatArray]  # per target: (K, d)
    target_mean: list[FloatArray]  # per target: (d,) t̄
    ridge: float  # the chosen weight

    @classmethod
    def fit(
        cls, attributes: ItemAttributes, targets: list[FloatArray], ridges: tuple[float, ...] = RIDGES
    ) -> AttributeMap:
        """From ``attributes`` aligned to the rows of every array of ``targets`` (n_items, d_k); the ridge
        weight chosen on the first target (see ``choose_ridge``)."""
        n = attributes.n_items
        if any(t.shape[0] != n for t in targets):
            raise ValueError(f"AttributeMap.fit: every target needs one row per item ({n})")
        column = feature_columns(attributes.value_items())
        features = column[attributes.values]
        keep = features >= 0
        pairs = Pairs(attributes.owners()[keep], features[keep], int(column.max(initial=-1)) + 1, n)
        ridge = choose_ridge(pairs, np.asarray(targets[0], np.float32), ridges) if pairs.k else DEFAULT_RIDGE
        widths = np.cumsum([t.shape[1] for t in targets])[:-1]
        solved = pairs.solve(np.ones(n, np.bool_), [np.asarray(t, np.float32) for t in targets], (ridge,))
        weights = [w.astype(np.float32) for w in np.split(solved.weights[0], widths, axis=1)]
        means = [m.astype(np.float32) for m in np.split(solved.t_mean, widths)]
        return cls(list(attributes.value_names), column, solved.mean, weights, means, ridge)

    def apply(self, attributes: ItemAttributes) -> tuple[IntArray, list[FloatArray]]:
        """Rows for the items of ``attributes`` that carry at least one feature value: (their item rows, one
        (n_placed, d_k) array per target). Items without such a value are left out: nothing places them."""
        known = attributes.with_vocabulary([], self.value_names)
        in_vocab = known.values < len(self.column)
        features = np.full(len(known.values), -1, np.int64)
        features[in_vocab] = self.column[known.values[in_vocab]]
        keep = features >= 0
        owners, features = known.owners()[keep], features[keep]
        rows = np.unique(owners)
        local = np.searchsorted(rows, owners)
        out = [
            linear_rows(local, features, len(rows), w.astype(np.float64), self.feature_mean, t.astype(np.float64))
            for w, t in zip(self.weights, self.target_mean, strict=True)
        ]
        return rows.astype(np.int64), out


def linear_rows(
    owners: IntArray,
    features: IntArray,
    n_rows: int,
    weights: npt.NDArray[np.float64],
    feature_mean: npt.NDArray[np.float64],
    target_mean: npt.NDArray[np.float64],
) -> FloatArray:
    """(n_rows, d) row(x) = (x - x̄) M + t̄ for the rows given as (owner row, feature) pairs."""
    out = np.zeros((n_rows, weights.shape[1]), np.float64)
    np.add.at(out, owners, weights[features])
    return np.asarray(out + (target_mean - feature_mean @ weights), np.float32)


def choose_ridge(pairs: Pairs, target: FloatArray, ridges: tuple[float, ...]) -> float:
    """The weight of ``ridges`` whose map, fitted without a seeded ``HELD_OUT`` share of the items that carry
    a feature, ranks those items best: each held-out item's true row, taken as a query, scores the predicted
    rows of all held-out items, and the mean rank of its own predicted row is the error (rows are used by dot
    product, so a ranking is judged; squared error picked weights 3x too small for side_info's rows, whose
    popularity column dominates it). ``DEFAULT_RIDGE`` when fewer than ``MIN_HELD_OUT`` items could be held out
    or only one weight is offered."""
    placed = np.flatnonzero(np.bincount(pairs.owners, minlength=pairs.n_items) > 0)
    size = min(MAX_HELD_OUT, int(HELD_OUT * len(placed)))
    if size < MIN_HELD_OUT or len(ridges) < 2:
        return ridges[0] if len(ridges) == 1 else DEFAULT_RIDGE
    chosen = np.sort(np.random.default_rng(0).choice(placed, size, replace=False))
    held = np.zeros(pairs.n_items, np.bool_)
    held[chosen] = True
    solved = pairs.solve(~held, [target], ridges)
    truth = target[chosen].astype(np.float64)
    errors = []
    for weights in solved.weights:
        scores = truth @ pairs.predict(solved, weights, chosen).astype(np.float64).T  # (held, held)
        errors.append(float((scores > np.diag(scores)[:, None]).sum(axis=1).mean()))
    return float(ridges[int(np.argmin(errors))])


def feature_columns(carriers: IntArray, max_values: int = MAX_VALUES) -> IntArray:
    """(n_values,) the feature column of each value: the ``max_values`` most carried ones (ties: the lower
    index), among those carried by ``MIN_CARRIERS`` items at least; -1 for the rest."""
    eligible = np.flatnonzero(carriers >= MIN_CARRIERS)
    chosen = eligible[np.argsort(-carriers[eligible], kind="stable")[:max_values]]
    column = np.full(len(carriers), -1, np.int64)
    column[np.sort(chosen)] = np.arange(len(chosen))
    return column


def normal_matrix(owners: IntArray, features: IntArray, k: int, n_items: int) -> npt.NDArray[np.float64]:
    """(k, k) XᵀX of the 0/1 (items x features) matrix given as (owner, feature) pairs sorted by owner,
    accumulated from every pair of features an item carries, ``CHUNK_PAIRS`` products at a time."""
    gram = np.zeros(k * k, np.float64)
    counts = np.bincount(owners, minlength=n_items)
    starts = np.zeros(n_items + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    squares = counts.astype(np.int64) ** 2
    lo = 0
    while lo < n_items:
        hi = lo + 1 + int(np.searchsorted(np.cumsum(squares[lo:]), CHUNK_PAIRS))
        hi = min(hi, n_items)
        gram += _pair_counts(features, starts[lo : hi + 1], k)
        lo = hi
    return gram.reshape(k, k)


def _pair_counts(features: IntArray, starts: IntArray, k: int) -> npt.NDArray[np.float64]:
    """(k*k,) how often each ordered (feature, feature) pair occurs within the items between ``starts``."""
    lengths = np.diff(starts)
    first = np.repeat(np.arange(starts[0], starts[-1], dtype=np.int64), np.repeat(lengths, lengths))
    squares = lengths * lengths
    item_start = np.repeat(starts[:-1], squares)
    within = np.arange(len(first), dtype=np.int64) - np.repeat(np.cumsum(squares) - squares, squares)
    second = item_start + within % np.repeat(lengths, squares)
    return np.bincount(features[first] * k + features[second], minlength=k * k).astype(np.float64)


def sparse_transpose_product(
    owners: IntArray, features: IntArray, dense: FloatArray, k: int
) -> npt.NDArray[np.float64]:
    """(k, d) Xᵀ ``dense`` for the 0/1 matrix X given as (owner, feature) pairs."""
    out = np.zeros((k, dense.shape[1]), np.float64)
    for j in range(dense.shape[1]):
        out[:, j] = np.bincount(features, weights=dense[owners, j], minlength=k)
    return out
