"""Training helpers shared by the sampled-negative models (MF, NCF).

* ``PairSet`` - the (user, item) positives as sorted int64 keys, for vectorised
  membership tests;
* ``sample_negatives`` - uniform negatives per positive, rejecting the user's
  own positives for a few vectorised rounds (what survives is rare and harmless);
* ``History``-batch helpers: ``pad_histories`` (for folding users in) and
  ``user_csr`` (each training user's positives, for pooled user towers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from trainer.fit import check_finite
from trainer.interactions import FloatArray, IntArray
from trainer.models.base import History


@dataclass(frozen=True)
class PairSet:
    """Sorted ``user * n_items + item`` keys of the positive pairs."""

    keys: IntArray
    n_items: int

    @classmethod
    def build(cls, users: npt.ArrayLike, items: npt.ArrayLike, n_items: int) -> PairSet:
        keys = np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)
        return cls(np.unique(keys), n_items)

    def contains(self, users: IntArray, items: IntArray) -> npt.NDArray[np.bool_]:
        """Elementwise: is (users, items) a positive pair? Broadcasts like numpy."""
        keys = users.astype(np.int64) * self.n_items + items
        if not len(self.keys):
            return np.zeros(keys.shape, np.bool_)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.asarray(self.keys[at] == keys)


def sample_negatives(
    users: IntArray, pool: IntArray, k: int, positives: PairSet, rng: np.random.Generator, rounds: int = 4
) -> IntArray:
    """(len(users), k) items drawn uniformly from ``pool``, redrawn up to ``rounds`` times where a user's positive."""
    draws = pool[rng.integers(0, len(pool), (len(users), k), dtype=np.int64)]
    for _ in range(rounds):
        bad = positives.contains(users[:, None], draws)  # (N, k)
        n_bad = int(bad.sum())
        if not n_bad:
            break
        draws[bad] = pool[rng.integers(0, len(pool), n_bad, dtype=np.int64)]
    return draws


def batches(n: int, size: int, rng: np.random.Generator) -> Iterator[IntArray]:
    """A seeded shuffle of ``range(n)`` in chunks of ``size``."""
    order = rng.permutation(n)
    for start in range(0, n, size):
        yield order[start : start + size]


def pad_histories(histories: Sequence[History]) -> tuple[IntArray, FloatArray]:
    """(items, weights), both (B, L) with L the longest history; padding has weight 0 and item 0."""
    width = max((len(h.items) for h in histories), default=0)
    items = np.zeros((len(histories), max(width, 1)), np.int64)
    weights = np.zeros((len(histories), max(width, 1)), np.float32)
    for row, h in enumerate(histories):
        items[row, : len(h.items)] = h.items
        weights[row, : len(h.items)] = h.weights
    return items, weights


def history_chunks(histories: Sequence[History], budget: int = 1 << 20) -> Iterator[slice]:
    """Slices of ``histories`` whose padded size (rows x longest) stays under ``budget`` elements."""
    start, width = 0, 1
    for end, h in enumerate(histories):
        width = max(width, len(h.items))
        if end > start and (end - start + 1) * width > budget:
            yield slice(start, end)
            start, width = end, max(1, len(h.items))
    if start < len(histories):
        yield slice(start, len(histories))


def weighted_mean(table: torch.Tensor, items: IntArray, weights: FloatArray) -> torch.Tensor:
    """(B, d): the ``weights``-weighted mean of ``table`` rows over each padded history row; zeros when empty."""
    idx = torch.as_tensor(items, device=table.device)
    w = torch.as_tensor(weights, device=table.device).clamp_min(0)  # (B, L)
    total = w.sum(dim=1, keepdim=True)  # (B, 1)
    summed = torch.einsum("bl,bld->bd", w, table[idx])  # (B, d)
    return summed / total.clamp_min(1e-12)


@dataclass(frozen=True)
class UserCsr:
    """Each training user's positive items (model rows) and weights, CSR by user."""

    indptr: IntArray
    items: IntArray
    weights: FloatArray

    @classmethod
    def build(cls, users: IntArray, items: IntArray, weights: FloatArray, n_users: int) -> UserCsr:
        order = np.argsort(users, kind="stable")
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        return cls(indptr, items[order].astype(np.int64), weights[order].astype(np.float32))

    def bags(self, users: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        """(flat items, offsets, weights) of the given users' histories, for ``embedding_bag``."""
        lo, hi = self.indptr[users], self.indptr[users + 1]
        lengths = hi - lo
        offsets = np.zeros(len(users), np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        flat = np.repeat(lo - offsets, lengths) + np.arange(int(lengths.sum()))
        return self.items[flat], offsets, self.weights[flat]

    def totals(self) -> FloatArray:
        """(n_users,) sum of each user's weights."""
        owners = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        return np.bincount(owners, self.weights, minlength=len(self.indptr) - 1).astype(np.float32)


StepFn = Callable[[IntArray], tuple[float, int]]  # batch of row indices -> (summed loss, examples)


def run_epochs(
    n_rows: int,
    epochs: int,
    batch: int,
    rng: np.random.Generator,
    step: StepFn,
    on_epoch: Callable[[int, float], None] | None,
    name: str,
) -> tuple[list[float], int]:
    """The shared epoch loop: seeded shuffles, NaN guard per epoch; returns (mean loss per epoch, examples)."""
    losses: list[float] = []
    samples = 0
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in batches(n_rows, batch, rng):
            loss_sum, n = step(rows)
            total, count = total + loss_sum, count + n
        mean = total / max(count, 1)
        check_finite(f"{name} loss (epoch {epoch})", mean)
        losses.append(mean)
        samples += count
        if on_epoch is not None:
            on_epoch(epoch, mean)
    return losses, samples


def frozen_rows(n_rows: int, data_to_model: IntArray) -> npt.NDArray[np.bool_]:
    """(n_rows,) True for the warm-start rows the data does not name: used as negatives, never updated."""
    frozen = np.ones(n_rows, np.bool_)
    frozen[data_to_model] = False
    return frozen


def lookup(table: torch.Tensor, items: torch.Tensor, frozen: torch.Tensor | None) -> torch.Tensor:
    """``table[items]`` with the rows of ``frozen`` items detached (no gradient reaches them)."""
    rows = table[items]
    if frozen is None:
        return rows
    mask = frozen[items]
    if rows.dim() > mask.dim():
        mask = mask[..., None]
    return torch.where(mask, rows.detach(), rows)
