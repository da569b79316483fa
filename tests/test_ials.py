"""iALS: known answers on planted clusters, fold-in, warm start, snapshot arrays, tail column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.interactions import Interactions
from trainer.models.base import History
from trainer.models.ials import ImplicitALS, _Csr, solve_rows


def planted(n_users: int = 200, n_items: int = 60, clusters: int = 4, per_user: int = 8,
            seed: int = 0, prefix: str = "i") -> Interactions:
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


def test_planted_clusters_rank_in_cluster_items_first() -> None:
    data = planted()
    model = ImplicitALS(dim=8, epochs=6, reg=1.0, unobserved=0.1, device="cpu", threads=1)
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


def test_warm_start_keeps_untouched_items_and_adds_new_ones() -> None:
    first = planted(seed=2)
    old = ImplicitALS(dim=8, epochs=5, device="cpu", threads=1)
    old.fit(first)
    # new data: only clusters 0 and 1 are active, plus brand-new items of cluster 0
    fresh = planted(n_users=100, n_items=60, seed=3)
    keep = np.isin([cluster_of(fresh.item_ids[i]) for i in fresh.items], [0, 1])
    recent = fresh.select(keep)
    extra = Interactions.from_ids([f"v{u}" for u in range(40) for _ in range(3)],
                                  [f"j{(u * 3 + k) % 12 * 4}" for u in range(40) for k in range(3)])
    users = [recent.user_ids[u] for u in recent.users] + [extra.user_ids[u] for u in extra.users]
    items = [recent.item_ids[i] for i in recent.items] + [extra.item_ids[i] for i in extra.items]
    both = Interactions.from_ids(users, items)
    new = ImplicitALS(dim=8, epochs=5, device="cpu", threads=1)
    report = new.fit(both, warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids
    assert report.new_items == 12 and new.n_items == old.n_items + 12
    untouched = [k for k, i in enumerate(old.item_ids) if cluster_of(i) in (2, 3)]
    np.testing.assert_array_equal(new.items[untouched], old.items[untouched])
    assert np.abs(new.items[old.n_items:]).sum() > 0


def test_arrays_round_trip_and_empty_history() -> None:
    model = ImplicitALS(dim=6, epochs=2, tail_weight=0.3, device="cpu", threads=1)
    model.fit(planted())
    config, arrays = model.to_arrays()
    back = ImplicitALS.from_arrays(config, arrays, model.item_ids)
    hist = [History(np.array([0, 4, 8]), np.array([1.0, 0.5, 2.0], np.float32)), History(np.zeros(0, np.int64),
                                                                                           np.zeros(0, np.float32))]
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
