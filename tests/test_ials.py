"""iALS: known answers on planted clusters, fold-in, warm start, snapshot arrays, tail column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.interactions import Interactions
from trainer.models import ials
from trainer.models.base import History
from trainer.models.ials import ImplicitALS, _Csr, solve_rows


def planted(
    n_users: int = 200, n_items: int = 60, clusters: int = 4, per_user: int = 8, seed: int = 0, prefix: str = "i"
) -> Interactions:
    """Users consume only inside their cluster (items k with k % clusters == cluster)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        c = u % clusters
        pool = np.arange(c, n_items, clusters)
        for i in rng.choice(pool, per_user, replace=False):
            users.append(f"u{u}")
            items.append(f"{prefix}{i}")
    return Interactions.from_ids(users, items)


def cluster_of(item_id: str, clusters: int = 4) -> int:
    return int(item_id.lstrip("ijk")) % clusters


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_planted_clusters_rank_in_cluster_items_first(solver: str) -> None:
    data = planted()
    model = ImplicitALS(dim=8, epochs=6, reg=1.0, unobserved=0.1, device="cpu", threads=1, solver=solver)
    report = model.fit(data)
    assert report.losses[-1] < report.losses[0]
    index = model.item_index()
    vectors = model.index_vectors()
    for c in range(4):
        hist = [index[f"i{k}"] for k in range(c, 20, 4)]
        q = model.query_vectors([History(np.asarray(hist), np.ones(len(hist), np.float32))])[0]
        top = np.argsort(-(vectors @ q))[:10]
        assert all(cluster_of(model.item_ids[t]) == c for t in top), (c, [model.item_ids[t] for t in top])
    sims = model.similar_vectors()
    for i in range(0, 60, 7):
        row = index[f"i{i}"]
        near = np.argsort(-(sims @ sims[row]))[1:6]
        assert all(cluster_of(model.item_ids[t]) == i % 4 for t in near)


def test_batched_solve_matches_a_direct_solve() -> None:
    rng = np.random.default_rng(1)
    other = torch.from_numpy(rng.normal(size=(30, 5)).astype(np.float32))
    rows = np.array([0, 0, 0, 1, 2, 2], np.int64)
    cols = np.array([3, 7, 9, 4, 1, 29], np.int64)
    w = np.array([1.0, 2.0, 1.0, 1.0, 3.0, 1.0], np.float32)
    csr = _Csr.build(rows, cols, w, 3, torch.device("cpu"))
    reg = torch.tensor([0.5, 0.1, 0.2])
    got = solve_rows(csr, other, 0.3, reg, torch.arange(3)).numpy()
    y = other.numpy().astype(np.float64)
    for r in range(3):
        mine = rows == r
        v, ww = y[cols[mine]], w[mine].astype(np.float64)
        a = 0.3 * y.T @ y + (v * ww[:, None]).T @ v + float(reg[r]) * np.eye(5)
        np.testing.assert_allclose(got[r], np.linalg.solve(a, (v * ww[:, None]).sum(0)), rtol=1e-4, atol=1e-5)


def spd_problem(d: int = 6, n_rows: int = 4, seed: int = 1) -> tuple[_Csr, torch.Tensor, torch.Tensor]:
    """Rows with 1..n_rows weighted cells over 40 random partners, like the batched-solve test."""
    rng = np.random.default_rng(seed)
    other = torch.from_numpy(rng.normal(size=(40, d)).astype(np.float32))
    rows = np.repeat(np.arange(n_rows), np.arange(1, n_rows + 1) * 3)
    cols = rng.integers(0, 40, len(rows))
    w = rng.uniform(0.5, 3.0, len(rows)).astype(np.float32)
    return _Csr.build(rows, cols, w, n_rows, torch.device("cpu")), other, torch.linspace(0.1, 1.0, n_rows)


def test_cg_with_d_steps_from_zero_matches_the_exact_solve() -> None:
    csr, other, reg = spd_problem()
    rows = torch.arange(4)
    exact = solve_rows(csr, other, 0.05, reg, rows)
    cg = solve_rows(csr, other, 0.05, reg, rows, cg_steps=6)  # CG is exact after d steps (up to rounding)
    np.testing.assert_allclose(cg.numpy(), exact.numpy(), rtol=1e-3, atol=1e-4)
    warm = solve_rows(csr, other, 0.05, reg, rows, start=exact, cg_steps=3)  # the solution is a fixed point
    np.testing.assert_allclose(warm.numpy(), exact.numpy(), rtol=1e-4, atol=1e-5)


def test_more_cg_steps_shrink_the_residual_and_the_error() -> None:
    csr, other, reg = spd_problem(d=16, n_rows=5, seed=4)
    rows = torch.arange(5)
    exact = solve_rows(csr, other, 0.05, reg, rows).double()
    d = other.shape[1]
    gram = 0.05 * other.double().T @ other.double()
    errors, residuals = [], []
    for steps in (1, 2, 3):
        err = solve_rows(csr, other, 0.05, reg, rows, cg_steps=steps).double() - exact
        # A-norm of the error (what CG minimises) and |A err| = |b - A x| per row
        mats = [gram + _cell_gram(csr, other, r) + float(reg[r]) * torch.eye(d, dtype=torch.float64) for r in range(5)]
        a_err = torch.stack([mats[r] @ err[r] for r in range(5)])
        errors.append((err * a_err).sum(1))
        residuals.append(a_err.norm(dim=1))
    assert bool((errors[1] < errors[0]).all() and (errors[2] < errors[1]).all())
    assert bool((residuals[2] < residuals[0]).all())


def _cell_gram(csr: _Csr, other: torch.Tensor, row: int) -> torch.Tensor:
    lo, hi = int(csr.indptr[row]), int(csr.indptr[row + 1])
    v = other[csr.col[lo:hi]].double()
    return (v * csr.weight[lo:hi, None].double()).T @ v


def test_unknown_solver_and_bad_cg_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="solver must be one of cholesky, cg"):
        ImplicitALS(solver="lu")
    with pytest.raises(ValueError, match="cg_steps"):
        ImplicitALS(solver="cg", cg_steps=0)


def test_cg_fit_folds_users_in_exactly() -> None:
    """Training may be approximate, serving is not: the fold-in is the exact solve whatever the solver."""
    model = ImplicitALS(dim=6, epochs=3, device="cpu", threads=1, solver="cg", cg_steps=2)
    model.fit(planted())
    exact = ImplicitALS(dim=6, epochs=3, device="cpu", threads=1)
    exact.items, exact.counts, exact.item_ids = model.items, model.counts, model.item_ids
    hist = [History(np.array([0, 4, 8]), np.array([1.0, 0.5, 2.0], np.float32))]
    np.testing.assert_array_equal(model.query_vectors(hist), exact.query_vectors(hist))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_warm_start_keeps_untouched_items_and_adds_new_ones(solver: str) -> None:
    first = planted(seed=2)
    old = ImplicitALS(dim=8, epochs=5, device="cpu", threads=1, solver=solver)
    old.fit(first)
    # new data: only clusters 0 and 1 are active, plus brand-new items of cluster 0
    fresh = planted(n_users=100, n_items=60, seed=3)
    keep = np.isin([cluster_of(fresh.item_ids[i]) for i in fresh.items], [0, 1])
    recent = fresh.select(keep)
    extra = Interactions.from_ids(
        [f"v{u}" for u in range(40) for _ in range(3)],
        [f"j{(u * 3 + k) % 12 * 4}" for u in range(40) for k in range(3)],
    )
    users = [recent.user_ids[u] for u in recent.users] + [extra.user_ids[u] for u in extra.users]
    items = [recent.item_ids[i] for i in recent.items] + [extra.item_ids[i] for i in extra.items]
    both = Interactions.from_ids(users, items)
    new = ImplicitALS(dim=8, epochs=5, device="cpu", threads=1, solver=solver)
    report = new.fit(both, warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids
    assert report.new_items == 12 and new.n_items == old.n_items + 12
    untouched = [k for k, i in enumerate(old.item_ids) if cluster_of(i) in (2, 3)]
    np.testing.assert_array_equal(new.items[untouched], old.items[untouched])
    assert np.abs(new.items[old.n_items :]).sum() > 0


def test_arrays_round_trip_and_empty_history() -> None:
    model = ImplicitALS(dim=6, epochs=2, tail_weight=0.3, device="cpu", threads=1)
    model.fit(planted())
    config, arrays = model.to_arrays()
    back = ImplicitALS.from_arrays(config, arrays, model.item_ids)
    hist = [
        History(np.array([0, 4, 8]), np.array([1.0, 0.5, 2.0], np.float32)),
        History(np.zeros(0, np.int64), np.zeros(0, np.float32)),
    ]
    np.testing.assert_array_equal(back.index_vectors(), model.index_vectors())
    q = back.query_vectors(hist)
    np.testing.assert_array_equal(q, model.query_vectors(hist))
    assert q.shape == (2, 7) and not q[1].any() and q[0, 6] == 1.0
    # the tail column penalises popular items: more users -> lower score offset
    counts, penalty = model.counts, model.index_vectors()[:, 6]
    assert np.corrcoef(np.log1p(counts), penalty)[0, 1] < -0.99
    with pytest.raises(ValueError, match="rows for"):
        ImplicitALS.from_arrays(config, arrays, model.item_ids[:-1])


def test_refuses_to_warm_start_from_another_kind() -> None:
    from trainer.models.item2vec import Item2Vec

    with pytest.raises(TypeError, match="item2vec"):
        ImplicitALS(dim=4, epochs=1, device="cpu").fit(planted(), warm_from=Item2Vec())


def test_a_users_vector_does_not_depend_on_the_batch() -> None:
    model = ImplicitALS(dim=6, epochs=2, device="cpu", threads=1)
    model.fit(planted())
    a = History(np.array([0, 4]), np.array([1.0, 2.0], np.float32))
    b = History(np.array([1, 5, 9]), np.array([5.0, 5.0, 1.0], np.float32))
    alone = model.query_vectors([a])[0]
    np.testing.assert_allclose(model.query_vectors([b, a])[1], alone, rtol=1e-5, atol=1e-6)


def test_cholesky_batches_capped_by_matrix_memory_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    other = torch.from_numpy(rng.normal(size=(50, 4)).astype(np.float32))
    rows = np.repeat(np.arange(40), 2)
    cols = rng.integers(0, 50, len(rows))
    csr = _Csr.build(rows, cols, np.ones(len(rows), np.float32), 40, torch.device("cpu"))
    reg = torch.full((40,), 0.3)
    whole = solve_rows(csr, other, 0.1, reg, torch.arange(40))
    monkeypatch.setattr(ials, "CHOLESKY_FLOATS", 3 * 16)  # three 4x4 matrices per batch
    torch.testing.assert_close(solve_rows(csr, other, 0.1, reg, torch.arange(40)), whole)


def test_the_loss_is_the_same_scored_in_chunks_of_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 50, 700), rng.integers(0, 40, 700)
    csr = _Csr.build(rows, cols, rng.random(700).astype(np.float32) + 0.5, 50, torch.device("cpu"))
    x, y = torch.randn(50, 8), torch.randn(40, 8)
    whole = ials._loss(x, y, csr, torch.arange(50), 0.01)
    monkeypatch.setattr(ials, "LOSS_CHUNK", 64)  # 11 chunks, the last one short
    assert ials._loss(x, y, csr, torch.arange(50), 0.01) == pytest.approx(whole, rel=1e-5)
    assert whole > 0
