"""Folding users in against fixed item factors: iALS's user half-step for a batch of histories.

Each user solves ``(G + r I + V^T W V) x = V^T w`` with ``G = a0 Y^T Y`` over all
items, ``V`` the history's item rows, ``w`` their weights and ``r`` the user's
frequency-scaled regulariser: the same system ``ials.solve_rows`` solves in
training. Serving folds in a few hundred short histories per step, where a
d x d factorisation per user (plus the d x d x m product that forms it) was
most of the cost. Here ``G = Q diag(lam) Q^T`` is decomposed once per model,
so ``G + r I`` is diagonal in ``Q``'s basis for every ``r``, and the Woodbury
identity turns a history of m < d items into an m x m solve:

    x = Q (D c - D Vq^T z),  (diag(1/w) + Vq D Vq^T) z = Vq D c

with ``Vq = V Q``, ``D = 1 / (lam + r)`` and ``c = Vq^T w``. Histories of d items
or more solve the d x d system directly. Users are grouped by history length
so that padding stays small; a padded row has ``v = 0`` and drops out exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BUCKET_EDGES = np.array([2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512])
TINY_WEIGHT = 1e-30  # below this an entry counts as absent (1 / w must stay finite)


class FoldIn:
    """Closed-form user factors for histories against fixed item factors ``items`` (n, d)."""

    def __init__(self, items: npt.NDArray[np.float32], a0: float) -> None:
        self.items = items
        self.gram = a0 * (items.T.astype(np.float64) @ items.astype(np.float64))
        lam, self.basis = np.linalg.eigh(self.gram)
        self.lam = np.maximum(lam, 0.0)  # G is positive semi-definite; clip rounding below zero

    def solve(self, positions: Sequence[IntArray], weights: Sequence[npt.ArrayLike], reg: FloatArray
              ) -> npt.NDArray[np.float32]:
        """(users, d) factors; a user with no positions gets zeros."""
        dim = self.items.shape[1]
        out = np.zeros((len(positions), dim), np.float32)
        lengths = np.array([len(p) for p in positions], np.int64)
        bucket = np.searchsorted(BUCKET_EDGES, lengths)
        for b in np.unique(bucket[lengths > 0]).tolist():
            rows = np.flatnonzero((bucket == b) & (lengths > 0))
            width = int(lengths[rows].max())
            vec, w = self._padded([positions[r] for r in rows.tolist()], [weights[r] for r in rows.tolist()], width)
            solve = self._woodbury if width < dim else self._direct
            out[rows] = solve(vec, w, np.asarray(reg, np.float64)[rows])
        return out

    def _padded(self, positions: list[IntArray], weights: list[npt.ArrayLike], width: int
                ) -> tuple[FloatArray, FloatArray]:
        """(b, width, d) item rows and (b, width) weights, zero beyond each history (and for tiny weights)."""
        idx = np.zeros((len(positions), width), np.int64)
        w = np.zeros((len(positions), width), np.float64)
        for k, (p, x) in enumerate(zip(positions, weights, strict=True)):
            idx[k, : len(p)] = p
            w[k, : len(p)] = x
        w[w < TINY_WEIGHT] = 0.0
        vec = self.items[idx].astype(np.float64)
        vec[w == 0.0] = 0.0
        return vec, w

    def _woodbury(self, vec: FloatArray, w: FloatArray, reg: FloatArray) -> FloatArray:
        vq = vec @ self.basis  # (b, m, d)
        d = 1.0 / (self.lam[None, :] + reg[:, None])  # (b, d)
        dc = d * np.einsum("bm,bmd->bd", w, vq)
        k = (vq * d[:, None, :]) @ vq.transpose(0, 2, 1)  # (b, m, m)
        diag = np.arange(w.shape[1])
        k[:, diag, diag] += np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 1.0)
        z = np.linalg.solve(k, np.einsum("bmd,bd->bm", vq, dc)[:, :, None])[:, :, 0]
        x: FloatArray = (dc - d * np.einsum("bmd,bm->bd", vq, z)) @ self.basis.T
        return x

    def _direct(self, vec: FloatArray, w: FloatArray, reg: FloatArray) -> FloatArray:
        weighted = vec * w[:, :, None]
        a = self.gram + weighted.transpose(0, 2, 1) @ vec  # (b, d, d)
        diag = np.arange(vec.shape[2])
        a[:, diag, diag] += reg[:, None]
        x: FloatArray = np.linalg.solve(a, weighted.sum(1)[:, :, None])[:, :, 0]
        return x
