"""Implicit alternating least squares (iALS), the way "iALS revisited" (Rendle et al. 2021) tunes it.

Loss over a user-item matrix of positive signals:

    sum_{(u,i) observed} w_ui (x_u.y_i - 1)^2  +  a0 * sum_{all (u,i)} (x_u.y_i)^2
      + lam * sum_u (1 + n_u / (a0 * n_items))^nu |x_u|^2 + lam * sum_i (1 + n_i / (a0 * n_users))^nu |y_i|^2

``a0`` weighs the unobserved cells (Hu et al.'s implicit ALS uses 1 and
``w = 1 + alpha * r``); the frequency-scaled regulariser (``nu``) is the part
that lets iALS match much newer models. Each half-step solves one small
(d x d) system per user (or item), batched on the device: ``solver="cg"``
(default) takes ``cg_steps`` conjugate-gradient steps from the row's current
value, applying the matrix without forming it (Takacs et al. 2011, implicit's
``cg_steps=3``), which costs O(steps * (d^2 + cells * d)) per row instead of
O(cells * d^2 + d^3); ``solver="cholesky"`` factors each row's matrix exactly.
Measured on Amazon-Beauty (CPU, 2 threads, 12 epochs): CG with 3 steps fits
dim 64 in 6.4 s and dim 128 in 14 s against Cholesky's 58 s and 334 s, with
recall@20 and NDCG@20 within 0.0002 of the exact solve (ML-100K: same 0.293).

Serving: the user side is never stored. ``query_vectors`` folds a history in
with exactly the user half-step (the history's items, with its type/recency
weights as ``w``), so a brand-new user is served after one event and training
users are served as they were fitted. ``tail_weight`` > 0 appends a column
``-tail_weight * log(1 + count_i)`` to the item rows (and 1 to queries): a
popularity penalty that favours rare items without retraining.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from trainer.fit import check_finite, grow_table, plan_items, resolve_device, seeded, torch_threads
from trainer.interactions import FloatArray, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History
from trainer.models.foldin import FoldIn, merge_cells
from trainer.models.negatives import UserCsr

CHUNK_CELLS = 300_000  # padded (row, partner) cells per batched solve: memory ~ cells * dim * 4 bytes
CHOLESKY_FLOATS = 32_000_000  # (rows * dim * dim) per batched Cholesky: short rows must not build GBs of matrices
SOLVERS = ("cholesky", "cg")


@dataclass(frozen=True)
class IALSConfig:
    dim: int = 64
    epochs: int = 12
    warm_epochs: int = 4
    reg: float = 3.0  # lam (tuned on an ML-100K validation split inside train)
    unobserved: float = 0.2  # a0
    nu: float = 1.0
    alpha: float = 0.0  # w_ui = 1 + alpha * log1p(summed positive weight)
    tail_weight: float = 0.0
    init_scale: float = 0.1
    seed: int = 0
    solver: str = "cg"  # "cg": cg_steps CG steps from the current rows; "cholesky": exact per-row solve
    cg_steps: int = 3

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"ials solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.cg_steps < 1:
            raise ValueError(f"ials cg_steps must be at least 1, got {self.cg_steps}")


@dataclass(frozen=True)
class _Csr:
    """Observed cells grouped by row: (indptr, col, weight)."""

    indptr: torch.Tensor
    col: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def build(cls, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n_rows: int, dev: torch.device) -> _Csr:
        grouped = UserCsr.build(
            np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(w, np.float32), n_rows
        )
        return cls(
            torch.from_numpy(grouped.indptr).to(dev),
            torch.from_numpy(grouped.items).to(dev),
            torch.from_numpy(grouped.weights).to(dev),
        )

    def counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]


def solve_rows(
    csr: _Csr,
    other: torch.Tensor,
    a0: float,
    reg: torch.Tensor,
    rows: torch.Tensor,
    start: torch.Tensor | None = None,
    cg_steps: int = 0,
) -> torch.Tensor:
    """Least-squares factors for ``rows`` of ``csr`` given the other side's factors (n_other, d).

    Rows are taken in order of length so each batch pads little: a batch is a
    (b, m, d) tensor of the rows' observed partners. ``cg_steps`` = 0 solves
    each row exactly (one bmm and one batched Cholesky); ``cg_steps`` > 0 takes
    that many conjugate-gradient steps from ``start`` (len(rows), d; zeros if None).
    """
    gram = a0 * (other.T @ other)  # (d, d)
    out = torch.zeros(len(rows), other.shape[1], dtype=other.dtype, device=other.device)
    if start is not None and cg_steps:
        out.copy_(start)
    n = (csr.indptr[rows + 1] - csr.indptr[rows]).cpu().numpy()
    order = np.argsort(n, kind="stable")
    n_sorted = np.maximum(n[order], 1)
    begin = 0
    while begin < len(rows):
        cost = np.arange(1, len(rows) - begin + 1) * n_sorted[begin:]  # batch of rows begin..begin+k: nondecreasing
        stop = begin + max(1, int(np.searchsorted(cost, CHUNK_CELLS, side="right")))
        if not cg_steps:
            stop = min(stop, begin + max(1, CHOLESKY_FLOATS // other.shape[1] ** 2))
        take = torch.from_numpy(order[begin:stop]).to(rows.device)
        vec, w = _gather(csr, other, rows[take])
        if cg_steps:
            out[take] = _cg_batch(vec, w, gram, reg[rows[take]], out[take], cg_steps)
        else:
            out[take] = _solve_batch(vec, w, gram, reg[rows[take]])
        begin = stop
    return out


def _gather(csr: _Csr, other: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' partner vectors (b, m, d) and weights (b, m), padded with weight 0."""
    lo, n = csr.indptr[rows], csr.indptr[rows + 1] - csr.indptr[rows]
    m = max(1, int(n.max()))
    offs = torch.arange(m, device=rows.device)
    mask = offs[None, :] < n[:, None]  # (b, m)
    idx = torch.where(mask, lo[:, None] + offs[None, :], torch.zeros_like(lo)[:, None])
    w = torch.where(mask, csr.weight[idx], torch.zeros((), device=rows.device))  # (b, m)
    return other[csr.col[idx]], w


def _solve_batch(vec: torch.Tensor, w: torch.Tensor, gram: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    weighted = vec * w[:, :, None]
    a = gram + torch.bmm(weighted.transpose(1, 2), vec)  # (b, d, d)
    a += reg[:, None, None] * torch.eye(vec.shape[2], dtype=a.dtype, device=a.device)
    rhs = weighted.sum(1)  # (b, d)
    chol = torch.linalg.cholesky(a)  # a is symmetric positive definite (reg > 0): Cholesky is ~2x LU
    solved: torch.Tensor = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    return solved


def _apply(vec: torch.Tensor, w: torch.Tensor, gram: torch.Tensor, reg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A p per row, A = gram + sum_cells w v v^T + reg I, without forming A: p (b, d) -> (b, d)."""
    vp = torch.bmm(vec, p[:, :, None])[:, :, 0]  # (b, m)
    return p @ gram + torch.bmm((w * vp)[:, None, :], vec)[:, 0, :] + reg[:, None] * p


def _cg_batch(
    vec: torch.Tensor, w: torch.Tensor, gram: torch.Tensor, reg: torch.Tensor, x: torch.Tensor, steps: int
) -> torch.Tensor:
    """``steps`` conjugate-gradient steps on every row's A x = sum_cells w v, from ``x`` (b, d)."""
    tiny = torch.finfo(x.dtype).tiny
    r = torch.bmm(w[:, None, :], vec)[:, 0, :] - _apply(vec, w, gram, reg, x)
    p, rs = r, (r * r).sum(1)
    for _ in range(steps):
        ap = _apply(vec, w, gram, reg, p)
        alpha = rs / (p * ap).sum(1).clamp_min(tiny)  # a converged row (r = p = 0) takes a zero step
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs.clamp_min(tiny))[:, None] * p
        rs = rs_new
    return x


class ImplicitALS(EmbeddingModel):
    """iALS with frequency-scaled regularisation; users folded in from their history."""

    kind = "ials"

    def __init__(self, *, device: str = "auto", threads: int = 2, **settings: Any) -> None:
        super().__init__()
        self.config = IALSConfig(**settings)
        self.device = device
        self.threads = threads
        self.items = np.zeros((0, self.config.dim), np.float32)  # (n_items, d)
        self.counts = np.zeros(0, np.float32)  # (n_items,) users per item in the last fit
        self._fold: FoldIn | None = None  # serving's fold-in, for the current items table

    def planned_epochs(self, warm: bool) -> int:
        return self.config.warm_epochs if warm else self.config.epochs

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        if warm_from is not None and not isinstance(warm_from, ImplicitALS):
            raise TypeError(f"ials cannot warm-start from a {warm_from.kind} model")
        cfg, dev = self.config, resolve_device(self.device)
        seeded(cfg.seed, dev)
        plan = plan_items(data.item_ids, warm_from.item_ids if warm_from else None)
        old = warm_from.items if warm_from else None
        table = grow_table(
            old, len(plan.item_ids), cfg.dim, cfg.init_scale / np.sqrt(cfg.dim), np.random.default_rng(cfg.seed)
        )
        users, items, w = _cells(data, plan.data_to_model, cfg.alpha)
        started = time.perf_counter()
        epochs = self.planned_epochs(warm_from is not None)
        with torch_threads(self.threads):
            y = torch.from_numpy(table).to(dev)
            by_user = _Csr.build(users, items, w, data.n_users, dev)
            by_item = _Csr.build(items, users, w, len(plan.item_ids), dev)
            unseen_new = torch.nonzero(by_item.counts()[plan.n_old :] == 0).flatten() + plan.n_old
            y[unseen_new] = 0.0  # an item without data must not outscore trained ones with its random start
            losses = _alternate(cfg, by_user, by_item, y, data.n_users, epochs, on_epoch)
            self.items = y.cpu().numpy().astype(np.float32)
        self.item_ids = plan.item_ids
        self.counts = _merge_counts(warm_from, by_item.counts().cpu().numpy(), plan.n_old)
        seconds = time.perf_counter() - started
        samples = len(w) * epochs
        return FitReport(
            self.kind, str(dev), epochs, seconds, samples, samples / max(seconds, 1e-9), losses, plan.n_new
        )

    # ------------------------------------------------------------ serving

    def index_vectors(self) -> FloatArray:
        if not self.config.tail_weight:
            return np.ascontiguousarray(self.items, np.float32)
        penalty = -self.config.tail_weight * np.log1p(self.counts)[:, None]
        return np.ascontiguousarray(np.hstack([self.items, penalty]), np.float32)

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        """Fold each history in with the user half-step (zeros for an empty history); see foldin.py."""
        cfg = self.config
        out = np.zeros((len(histories), cfg.dim + (1 if cfg.tail_weight else 0)), np.float32)
        if self._fold is None or self._fold.items is not self.items:  # a new fit or load: new items
            self._fold = FoldIn(self.items, cfg.unobserved)
        lengths = torch.tensor([len(h.items) for h in histories], dtype=torch.int64)
        reg = _reg(lengths, cfg, self.n_items).numpy()
        # each history's weights scaled to a maximum of 1 (a user's vector never depends on the batch)
        out[:, : cfg.dim] = self._fold.solve(
            [h.items for h in histories], [h.weights for h in histories], reg, unit_max=True
        )
        if cfg.tail_weight:
            out[lengths.numpy() > 0, cfg.dim] = 1.0
        return out

    def tilt(self) -> float:
        """The popularity penalty's weight in the index (``tail_weight``; trainer/tilt.py chooses it)."""
        return self.config.tail_weight

    def set_tilt(self, weight: float) -> None:
        """Serve with this ``tail_weight`` from now on; the fitted rows stay as they are."""
        self.config = replace(self.config, tail_weight=float(weight))

    def similar_vectors(self) -> FloatArray:
        norms = np.linalg.norm(self.items, axis=1, keepdims=True)
        return np.ascontiguousarray(self.items / np.maximum(norms, 1e-12), np.float32)

    # ------------------------------------------------------------ snapshot

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        return asdict(self.config), {"items": self.items, "counts": self.counts}

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> ImplicitALS:
        model = cls(**config)
        model.items = np.asarray(arrays["items"], np.float32)
        model.counts = np.asarray(arrays["counts"], np.float32)
        if len(model.items) != len(item_ids) or len(model.counts) != len(item_ids):
            raise ValueError(f"ials snapshot has {len(model.items)} rows for {len(item_ids)} item ids")
        model.item_ids = list(item_ids)
        return model


def _alternate(
    cfg: IALSConfig,
    by_user: _Csr,
    by_item: _Csr,
    y: torch.Tensor,
    n_users: int,
    epochs: int,
    on_epoch: EpochCallback | None,
) -> list[float]:
    """``epochs`` alternating half-steps (users, then items), refitting ``y`` in place; returns each epoch's loss."""
    reg_u = _reg(by_user.counts(), cfg, int(y.shape[0]))
    reg_i = _reg(by_item.counts(), cfg, n_users)
    active_u = torch.nonzero(by_user.counts() > 0).flatten()
    active_i = torch.nonzero(by_item.counts() > 0).flatten()  # items the data mentions: the only rows refit
    x, steps = torch.zeros(n_users, cfg.dim, device=y.device), cfg.cg_steps if cfg.solver == "cg" else 0
    losses: list[float] = []
    for epoch in range(epochs):  # cg starts each row from its last value (users: zeros at first)
        x[active_u] = solve_rows(by_user, y, cfg.unobserved, reg_u, active_u, x[active_u], steps)
        y[active_i] = solve_rows(by_item, x, cfg.unobserved, reg_i, active_i, y[active_i], steps)
        losses.append(_loss(x, y, by_user, active_u, cfg.unobserved))
        check_finite(f"ials loss at epoch {epoch}", losses[-1])
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


def _cells(data: Interactions, to_model: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct positive (user, item row) cells with w = 1 + alpha * log1p(summed weight)."""
    pos = data.positives()
    rows = to_model[pos.items]
    users, items, summed = merge_cells(pos.users, rows, pos.weights, int(rows.max()) + 1 if len(rows) else 1)
    return users, items, 1.0 + alpha * np.log1p(summed)


def _reg(counts: torch.Tensor, cfg: IALSConfig, n_other: int) -> torch.Tensor:
    """lam * ((n + a0 * n_other) / (a0 * n_other)) ** nu: Rendle's frequency scaling, relative to the
    unobserved term, so ``reg`` keeps its meaning as catalogues grow."""
    base = max(cfg.unobserved * n_other, 1.0)
    return cfg.reg * ((counts.to(torch.float32) + base) / base) ** cfg.nu


LOSS_CHUNK = 1 << 18  # observed cells scored at a time: the loss holds 2 x this x dim floats, not cells x dim


def _loss(x: torch.Tensor, y: torch.Tensor, csr: _Csr, active: torch.Tensor, a0: float) -> float:
    """Mean squared error on observed cells plus the unobserved term, per observed cell."""
    users = torch.repeat_interleave(torch.arange(len(csr.counts()), device=x.device), csr.counts())
    observed = 0.0
    for lo in range(0, len(csr.col), LOSS_CHUNK):
        part = slice(lo, lo + LOSS_CHUNK)
        pred = (x[users[part]] * y[csr.col[part]]).sum(1)
        observed += float((csr.weight[part] * (pred - 1) ** 2).sum())
    unobserved = a0 * float(((x[active] @ y.T) ** 2).sum()) if len(active) * len(y) < 5e7 else 0.0
    return (observed + unobserved) / max(1, len(csr.col))


def _merge_counts(previous: ImplicitALS | None, fitted: np.ndarray, n_old: int) -> np.ndarray:
    counts = fitted.astype(np.float32)
    if previous is not None and n_old:
        counts[:n_old] = np.maximum(counts[:n_old], previous.counts[:n_old])
    return counts
