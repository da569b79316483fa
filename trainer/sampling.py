"""Training-pair and negative sampling for the skip-gram item models.

Pairs follow Lit2Vec2 (seed 000): a user's positive items are a *set*, not a
sentence, so every positive is a target once per epoch and its ``context``
partners are drawn uniformly (with replacement) from the *other* items of the
same user. Order and time play no part, which suits ratings and purchase logs
where the order within a user is mostly noise. Everything is vectorised numpy:
one epoch of pairs is a handful of array operations, not a Python loop.

Negatives come from one of three distributions over the model's item rows:

* ``log_uniform`` - items ranked by popularity (rank 0 = most positives),
  ``P(r) = log((r + 2) / (r + 1)) / log(n + 1)``. Lit2Vec2's choice: compared
  with word2vec's unigram^0.75 it draws popular items less and the long tail
  more often, so rare items get pushed away from unrelated users and end up
  with useful neighbourhoods instead of hugging the popular cluster.
* ``unigram`` - ``count ** 0.75`` (word2vec); items never seen are never drawn.
* ``uniform`` - every row equally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.interactions import IntArray

SAMPLERS = ("log_uniform", "unigram", "uniform")
UNIGRAM_POWER = 0.75


@dataclass(frozen=True)
class UserSets:
    """CSR of each user's distinct positive item rows: ``items[indptr[u]:indptr[u + 1]]``."""

    indptr: IntArray
    items: IntArray

    @classmethod
    def build(cls, users: npt.ArrayLike, items: npt.ArrayLike, n_users: int) -> UserSets:
        """Group (user, item row) pairs by user, dropping repeats of the same pair.

        Repeats are dropped so that "a context item other than the target"
        really is a different item, never the same item seen twice.
        """
        u = np.asarray(users, np.int64)
        i = np.asarray(items, np.int64)
        if len(u):
            stride = int(i.max()) + 1
            key = np.sort(u * stride + i)  # by user, then item (np.unique's hashing is ~40x slower here)
            key = key[np.r_[True, key[1:] != key[:-1]]]
            u, i = key // stride, key % stride
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr, i)

    def lengths(self) -> IntArray:
        return np.diff(self.indptr)

    def n_pairs(self, context: int) -> int:
        """Pairs one epoch gives: ``context`` per positive of every user with >= 2 items."""
        lens = self.lengths()
        return int(lens[lens >= 2].sum()) * context


def sample_pairs(sets: UserSets, context: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """One epoch of training pairs: (T,) target rows and (T, context) context rows, targets shuffled.

    Each positive of a user with ``n >= 2`` items is a target once; each of
    its partners is ``(j + 1 + k) mod n`` for the target's slot ``j`` and
    ``k`` uniform in ``[0, n - 1)``, i.e. uniform over the user's other items
    (with replacement). Users with one positive give nothing: there is no
    partner. Pairs = ``T * context``.
    """
    lens = sets.lengths()
    owners = np.repeat(np.arange(len(lens), dtype=np.int64), lens)  # (P,) user of each slot
    keep = np.flatnonzero(lens[owners] >= 2)
    if not len(keep) or context < 1:
        return np.zeros(0, np.int64), np.zeros((0, max(context, 0)), np.int64)
    keep = keep[rng.permutation(len(keep))]  # shuffled targets: batches mix users
    start = sets.indptr[owners[keep]]  # (T,)
    n = lens[owners[keep]]
    slot = keep - start  # (T,) target's position inside its user
    k = (rng.random((len(keep), context)) * (n - 1)[:, None]).astype(np.int64)  # (T, C) in [0, n - 1)
    partner = start[:, None] + (slot[:, None] + 1 + k) % n[:, None]  # (T, C) never the target's slot
    return sets.items[keep], sets.items[partner]


def popularity_ranks(counts: npt.ArrayLike) -> IntArray:
    """Row -> rank by descending count (ties by row index): rank 0 is the most popular row."""
    c = np.asarray(counts, np.float64)
    order = np.lexsort((np.arange(len(c)), -c))  # rows, most popular first
    ranks = np.empty(len(c), np.int64)
    ranks[order] = np.arange(len(c))
    return ranks


def negative_probs(counts: npt.ArrayLike, kind: str) -> npt.NDArray[np.float64]:
    """Probability of drawing each row as a negative under sampler ``kind`` (sums to 1)."""
    c = np.asarray(counts, np.float64)
    if not len(c):
        return c
    if kind == "log_uniform":
        r = popularity_ranks(c).astype(np.float64)
        p = np.log((r + 2.0) / (r + 1.0))
    elif kind == "unigram":
        p = np.power(np.maximum(c, 0.0), UNIGRAM_POWER)
        if p.sum() <= 0:  # no counts at all: fall back to uniform rather than divide by zero
            p = np.ones_like(c)
    elif kind == "uniform":
        p = np.ones_like(c)
    else:
        raise ValueError(f"unknown negative sampler {kind!r}; choose from {SAMPLERS}")
    return np.asarray(p / p.sum(), np.float64)


class NegativeSampler:
    """Draws negative item rows by inverse-CDF lookup: one ``searchsorted`` per call.

    Drawing a whole epoch's negatives in one call keeps sampling out of the
    per-batch loop.
    """

    def __init__(self, probs: npt.ArrayLike) -> None:
        cdf = np.cumsum(np.asarray(probs, np.float64))
        if not len(cdf) or not cdf[-1] > 0:
            raise ValueError("NegativeSampler needs at least one item with positive probability")
        self.cdf = cdf / cdf[-1]

    def draw(self, shape: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        """int64 item rows of ``shape``."""
        rows = np.searchsorted(self.cdf, rng.random(shape), side="right")
        return np.minimum(rows, len(self.cdf) - 1).astype(np.int64)
