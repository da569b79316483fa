"""trainer.models.gfcf: the spectral graph filter recovers planted clusters, warm-starts and round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.interactions import Interactions
from trainer.models import registry
from trainer.models.base import History
from trainer.models.gfcf import SpectralFilter
from trainer.snapshot import load_snapshot, save_snapshot

CLUSTERS = 4


def planted(n_users: int = 120, n_items: int = 60, per_user: int = 6, seed: int = 0) -> Interactions:
    """Users of cluster c consume items of cluster c (item i is in cluster i % CLUSTERS)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        own = np.arange(u % CLUSTERS, n_items, CLUSTERS)
        for i in rng.choice(own, per_user, replace=False):
            users.append(f"u{u}")
            items.append(f"i{i}")
    return Interactions.from_ids(users, items)


def model() -> SpectralFilter:
    built = registry.build_preset("gfcf", device="cpu", dim=8, ideal_dim=4)
    assert isinstance(built, SpectralFilter)
    return built


def test_a_history_is_served_its_own_cluster() -> None:
    data = planted()
    gf = model()
    gf.fit(data)
    index, rows = gf.index_vectors(), gf.item_index()
    cluster = np.array([int(i[1:]) % CLUSTERS for i in gf.item_ids])
    for c in range(CLUSTERS):
        history = [rows[f"i{i}"] for i in range(c, 8, CLUSTERS)]
        query = gf.query_vectors([History(np.array(history), np.ones(len(history), np.float32))])[0]
        scores = index @ query
        top = np.argsort(-scores)[:10]
        assert (cluster[top] == c).all()
    assert not gf.query_vectors([History(np.zeros(0, np.int64), np.zeros(0, np.float32))]).any()
    sims = gf.similar_vectors()
    assert np.allclose(np.linalg.norm(sims, axis=1), 1.0, atol=1e-5)


def test_fit_is_reproducible_and_snapshots_round_trip() -> None:
    data = planted()
    a, b = model(), model()
    a.fit(data)
    b.fit(data)
    assert np.allclose(a.index_vectors(), b.index_vectors(), atol=1e-5)
    config, arrays = a.to_arrays()
    back = SpectralFilter.from_arrays(config, arrays, a.item_ids)
    history = [History(np.array([0, 4]), np.ones(2, np.float32))]
    assert np.array_equal(back.query_vectors(history), a.query_vectors(history))


def test_warm_start_keeps_rows_and_appends_new_items() -> None:
    old = model()
    old.fit(planted())
    more = Interactions.from_ids(["u0", "u1", "u2", "u3", "u9"], ["i0", "i1", "i2", "new", "new"])
    new = model()
    report = new.fit(more, warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids and new.item_ids[-1] == "new"
    assert report.new_items == 1 and new.index_vectors().shape[0] == old.n_items + 1


def test_a_snapshot_on_disk_serves_the_same_queries(tmp_path: Path) -> None:
    gf = model()
    gf.fit(planted())
    save_snapshot(gf, tmp_path / "v1", version="v1", data_watermark={}, metrics={}, parent_version=None)
    back, _ = load_snapshot(tmp_path / "v1")
    history = [History(np.array([1, 5, 9]), np.ones(3, np.float32))]
    assert back.item_ids == gf.item_ids
    assert np.array_equal(back.query_vectors(history), gf.query_vectors(history))
    assert np.array_equal(back.index_vectors(), gf.index_vectors())
