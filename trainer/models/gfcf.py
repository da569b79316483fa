"""Spectral graph filter (GF-CF's ideal low-pass filter, in low-rank form): a closed-form model served by faiss.

The degree-normalised user-item matrix ``Rn = Du^-1/2 R Di^-1/2`` is factored
once by a truncated SVD, ``Rn ~ U S V^T`` (top ``dim`` singular vectors). A
history ``r`` (one weight per item) is scored by two filters on the item graph:

    score(r) = (r V) S^beta V^T  +  alpha * (r Di^-1/2 V_k) V_k^T Di^1/2

the first a low-rank form of GF-CF's normalised linear filter, the second its
ideal low-pass filter over the top ``ideal_dim`` = k singular vectors. Both are
inner products, so ``index_vectors`` is ``[V, alpha Di^1/2 V_k]`` and
``query_vectors`` is ``[(r V) S^beta, r Di^-1/2 V_k]``: a user is served from
their history right after an event (the query is linear in the history), with
no user table and no retraining. Fitting is one truncated SVD: dense LAPACK
up to ``DENSE_CELLS`` matrix cells, else ``scipy.sparse.linalg.svds`` from a
seeded start vector (reproducible on CPU either way).
Warm start keeps every previous item row position (new items appended) and
refits the filter on the new data; items absent from it keep zero rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from trainer.fit import plan_items
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History

DENSE_CELLS = 5_000_000  # users x items up to which the SVD is a dense LAPACK one (ML-100K: 1.6M)


@dataclass(frozen=True)
class SpectralConfig:
    dim: int = 512  # singular vectors of the linear filter
    ideal_dim: int = 256  # singular vectors of the ideal low-pass filter (<= dim; Last.fm validation: 256 > 128)
    alpha: float = 1.0  # weight of the ideal low-pass filter
    beta: float = 0.0  # linear filter's spectral exponent (0: a projection)
    seed: int = 0
    epochs: int = 1  # a closed form: accepted for the common constructor, unused

    def __post_init__(self) -> None:
        if not 0 < self.ideal_dim <= self.dim:
            raise ValueError(f"gfcf needs 0 < ideal_dim <= dim, got {self.ideal_dim} and {self.dim}")


class SpectralFilter(EmbeddingModel):
    """GF-CF-style low-rank spectral filter; users are linear in their history."""

    kind = "gfcf"

    def __init__(self, *, device: str = "cpu", threads: int = 2, **settings: Any) -> None:
        super().__init__()
        self.config = SpectralConfig(**settings)
        self.device, self.threads = device, threads
        self.vectors = np.zeros((0, self.config.dim), np.float32)  # (n_items, r) right singular vectors
        self.spectrum = np.zeros(self.config.dim, np.float32)  # (r,) singular values, descending
        self.degrees = np.zeros(0, np.float32)  # (n_items,) users per item

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and not isinstance(warm_from, SpectralFilter):
            raise TypeError(f"gfcf cannot warm-start from a {warm_from.kind} model")
        started = time.perf_counter()
        plan = plan_items(data.item_ids, warm_from.item_ids if warm_from else None)
        pos = data.positives()
        n_items = len(plan.item_ids)
        matrix = sp.csr_matrix(
            (np.ones(len(pos)), (pos.users, plan.data_to_model[pos.items])), shape=(data.n_users, n_items)
        )
        matrix.data[:] = 1.0  # repeats count once
        self.vectors, self.spectrum, self.degrees = _factor(matrix, self.config)
        self.item_ids = plan.item_ids
        seconds = time.perf_counter() - started
        if on_epoch is not None:
            on_epoch(0, 0.0)
        return FitReport(self.kind, "cpu", 1, seconds, matrix.nnz, matrix.nnz / max(seconds, 1e-9), [0.0], plan.n_new)

    # ------------------------------------------------------------ serving

    def _scale(self, power: float) -> FloatArray:
        return np.where(self.degrees > 0, np.maximum(self.degrees, 1.0) ** power, 0.0).astype(np.float32)

    def index_vectors(self) -> FloatArray:
        k = self.config.ideal_dim
        ideal = self.config.alpha * self._scale(0.5)[:, None] * self.vectors[:, :k]
        return np.ascontiguousarray(np.hstack([self.vectors, ideal]), np.float32)

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        """``[(r V) S^beta, r Di^-1/2 V_k]`` per history, weights scaled to a maximum of 1; zeros when empty."""
        cfg = self.config
        out = np.zeros((len(histories), self.vectors.shape[1] + cfg.ideal_dim), np.float32)
        inverse = self._scale(-0.5)
        filt = self.spectrum**cfg.beta if cfg.beta else np.ones_like(self.spectrum)
        for row, history in enumerate(histories):
            if not len(history.items):
                continue
            w = np.asarray(history.weights, np.float32)
            w = w / max(float(w.max()), 1e-9)
            rows = self.vectors[history.items]  # (m, r)
            out[row, : len(filt)] = (w @ rows) * filt
            out[row, len(filt) :] = (w * inverse[history.items]) @ rows[:, : cfg.ideal_dim]
        return out

    def similar_vectors(self) -> FloatArray:
        scaled = self.vectors * self.spectrum[None, :]
        norms = np.linalg.norm(scaled, axis=1, keepdims=True)
        return np.ascontiguousarray(scaled / np.maximum(norms, 1e-12), np.float32)

    # ------------------------------------------------------------ snapshot

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        arrays = {"vectors": self.vectors, "spectrum": self.spectrum, "degrees": self.degrees}
        return asdict(self.config), arrays

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> SpectralFilter:
        model = cls(**config)
        model.vectors = np.asarray(arrays["vectors"], np.float32)
        model.spectrum = np.asarray(arrays["spectrum"], np.float32)
        model.degrees = np.asarray(arrays["degrees"], np.float32)
        if len(model.vectors) != len(item_ids) or len(model.degrees) != len(item_ids):
            raise ValueError(f"gfcf snapshot has {len(model.vectors)} rows for {len(item_ids)} item ids")
        model.item_ids = list(item_ids)
        return model


def _factor(matrix: sp.csr_matrix, cfg: SpectralConfig) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(item vectors (n, r), singular values (r,), item degrees (n,)) of the normalised matrix."""
    user_deg = np.asarray(matrix.sum(axis=1)).ravel()
    item_deg = np.asarray(matrix.sum(axis=0)).ravel()
    normed = (
        sp.diags(1.0 / np.sqrt(np.maximum(user_deg, 1.0))) @ matrix @ sp.diags(1.0 / np.sqrt(np.maximum(item_deg, 1.0)))
    )
    rank = min(cfg.dim, min(matrix.shape) - 1)
    vectors = np.zeros((matrix.shape[1], cfg.dim), np.float32)
    spectrum = np.zeros(cfg.dim, np.float32)
    if rank < 1 or normed.nnz == 0:
        return vectors, spectrum, item_deg.astype(np.float32)
    if matrix.shape[0] * matrix.shape[1] <= DENSE_CELLS:  # LAPACK beats ARPACK by far at a rank near full
        _, s, vt = np.linalg.svd(normed.toarray(), full_matrices=False)
        s, vt = s[:rank], vt[:rank]
    else:
        start = np.random.default_rng(cfg.seed).standard_normal(min(matrix.shape))
        _, s, vt = svds(sp.csc_matrix(normed), k=rank, v0=start, random_state=cfg.seed)
    order = np.argsort(-s)
    vt = vt[order] * np.sign(vt[order].sum(axis=1, keepdims=True) + 1e-30)  # a fixed sign per vector
    vectors[:, :rank] = vt.T
    spectrum[:rank] = s[order]
    return vectors, spectrum, item_deg.astype(np.float32)
