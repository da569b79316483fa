"""Matrix factorisation and NCF: planted structure, warm start, persistence, determinism, guards (CPU only)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from trainer.interactions import Interactions
from trainer.models.base import EmbeddingModel, History
from trainer.models.mf import MatrixFactorization
from trainer.models.ncf import NCF
from trainer.models.negatives import PairSet, UserCsr, sample_negatives

CLUSTERS, ITEMS_PER, USERS_PER, PER_USER = 4, 12, 20, 8


def planted(clusters: range = range(CLUSTERS), seed: int = 0, prefix: str = "u") -> Interactions:
    """Users of cluster c consume PER_USER random items of cluster c (item ids ``i<c>_<k>``)."""
    rng = np.random.default_rng(seed)
    users: list[str] = []
    items: list[str] = []
    for c in clusters:
        for u in range(USERS_PER):
            picks = rng.choice(ITEMS_PER, PER_USER, replace=False)
            users += [f"{prefix}{c}_{u}"] * PER_USER
            items += [f"i{c}_{k}" for k in picks.tolist()]
    return Interactions.from_ids(users, items, ts=list(range(len(users))))


def history(model: EmbeddingModel, ids: list[str]) -> History:
    index = model.item_index()
    return History(np.array([index[i] for i in ids], np.int64), np.ones(len(ids), np.float32))


def empty() -> History:
    return History(np.zeros(0, np.int64), np.zeros(0, np.float32))


def cluster_precision(model: EmbeddingModel, cluster: int, exact: bool = False, top: int = 6) -> float:
    """Share of the top items (history excluded) for a 3-item history of ``cluster`` that lie in it."""
    seen = [f"i{cluster}_{k}" for k in range(3)]
    h = [history(model, seen)]
    if exact:
        assert isinstance(model, NCF)
        scores = model.score_all(h)[0]
    else:
        scores = (model.query_vectors(h) @ model.index_vectors().T)[0]
    scores[h[0].items] = -np.inf
    best = np.argsort(-scores)[:top]
    return float(np.mean([model.item_ids[i].startswith(f"i{cluster}_") for i in best]))


def mf(**kw: Any) -> MatrixFactorization:
    return MatrixFactorization(
        **{"dim": 8, "epochs": 25, "lr": 0.05, "weight_decay": 1e-3, "batch": 128, "device": "cpu", "threads": 1, **kw}
    )


def ncf(**kw: Any) -> NCF:
    return NCF(
        **{"dim": 8, "layers": (16, 16, 8), "epochs": 30, "lr": 0.02, "batch": 128, "device": "cpu", "threads": 1, **kw}
    )


# ---------------------------------------------------------------- planted structure


@pytest.mark.parametrize("kw", [{"loss": "bpr"}, {"loss": "bce"}, {"loss": "bpr", "fold_in": "mean"}])
def test_mf_implicit_recovers_planted_clusters(kw: dict[str, Any]) -> None:
    model = mf(**kw)
    report = model.fit(planted())
    assert report.losses[-1] < report.losses[0]
    assert model.fold_scale > 0
    for c in range(CLUSTERS):
        assert cluster_precision(model, c) >= 0.8, (kw, c)


def planted_ratings(seed: int = 0) -> tuple[Interactions, np.ndarray[Any, Any]]:
    """Every user rates 6 items of their cluster 5 and 6 other items 1; returns (data, planted (user, item) matrix)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = CLUSTERS * USERS_PER, CLUSTERS * ITEMS_PER
    truth = np.ones((n_users, n_items), np.float32)
    users, items = [], []
    for u in range(n_users):
        own = u // USERS_PER
        truth[u, own * ITEMS_PER : (own + 1) * ITEMS_PER] = 5.0
        inside = own * ITEMS_PER + rng.choice(ITEMS_PER, 6, replace=False)
        outside = rng.choice(np.setdiff1d(np.arange(n_items), np.arange(own * ITEMS_PER, (own + 1) * ITEMS_PER)), 6)
        users += [u] * 12
        items += [*inside.tolist(), *outside.tolist()]
    u_arr, i_arr = np.array(users), np.array(items)
    data = Interactions(
        u_arr.astype(np.int32),
        i_arr.astype(np.int32),
        (truth[u_arr, i_arr] >= 4).astype(np.float32),
        truth[u_arr, i_arr],
        np.zeros(len(u_arr), np.int64),
        [f"u{u}" for u in range(n_users)],
        [f"i{i}" for i in range(n_items)],
    )
    return data, truth


def test_mf_mse_predicts_planted_ratings_within_range() -> None:
    data, truth = planted_ratings()
    model = mf(loss="mse", epochs=40, weight_decay=1e-4)
    model.fit(data)
    users, items = np.meshgrid(np.arange(truth.shape[0]), np.arange(truth.shape[1]), indexing="ij")
    pred = model.predict_ratings(users.ravel(), items.ravel()).reshape(truth.shape)
    assert ((pred > 0.5) & (pred < 5.5)).all()
    trained = np.zeros_like(truth, np.bool_)
    trained[data.users, data.items] = True
    assert np.abs(pred - truth)[trained].mean() < 0.35
    assert np.abs(pred - truth)[~trained].mean() < 1.0  # unseen pairs: generalised from the cluster
    with pytest.raises(ValueError, match="mse"):
        mf().predict_ratings(users.ravel(), items.ravel())


def test_mf_mse_range_is_the_sigmoid_range() -> None:
    data, _ = planted_ratings()
    model = mf(loss="mse", rating_range=(2.0, 3.0), epochs=5)
    model.fit(data)
    pred = model.predict_ratings(data.users.astype(np.int64), data.items.astype(np.int64))
    assert pred.min() > 2.0 and pred.max() < 3.0
    assert pred.max() - pred.min() > 0.2  # it did learn to separate the 5s from the 1s within the range


@pytest.mark.parametrize("variant", ["neumf", "gmf", "mlp"])
def test_ncf_recovers_planted_clusters(variant: str) -> None:
    model = ncf(variant=variant)
    report = model.fit(planted())
    assert report.losses[-1] < report.losses[0]
    for c in range(CLUSTERS):
        assert cluster_precision(model, c, exact=True) >= 0.8, (variant, c)
    if variant != "mlp":  # the GMF tower alone (what ANN retrieval uses) also finds the cluster
        assert np.mean([cluster_precision(model, c) for c in range(CLUSTERS)]) >= 0.8


def test_ncf_score_all_agrees_with_forward_pass() -> None:
    model = ncf(epochs=3)
    model.fit(planted())
    histories = [history(model, ["i0_1", "i0_2"]), history(model, ["i2_5"]), empty()]
    net = model.net
    assert net is not None
    with torch.no_grad():
        items = torch.arange(model.n_items).expand(len(histories), -1)
        direct = net(model.pooled(histories), items).numpy()
    np.testing.assert_allclose(model.score_all(histories), direct, rtol=1e-5, atol=1e-5)


def test_gmf_inner_product_is_its_exact_score() -> None:
    model = ncf(variant="gmf", epochs=3)
    model.fit(planted())
    histories = [history(model, ["i1_1", "i3_2"]), history(model, ["i2_5"])]
    via_index = model.query_vectors(histories) @ model.index_vectors().T
    np.testing.assert_allclose(via_index, model.score_all(histories), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- serving details


@pytest.mark.parametrize("make", [mf, ncf])
def test_empty_history_gives_a_zero_query_row(make: Any) -> None:
    model = make(epochs=2)
    model.fit(planted())
    rows = model.query_vectors([history(model, ["i0_0"]), empty()])
    assert rows.dtype == np.float32 and rows.shape == (2, model.index_vectors().shape[1])
    assert not rows[1].any()
    assert rows[0].any()
    assert model.query_vectors([]).shape[0] == 0
    sims = model.similar_vectors()
    np.testing.assert_allclose(np.linalg.norm(sims, axis=1), 1.0, rtol=1e-5)


def test_mf_ranking_is_user_row_ranking_for_a_training_user() -> None:
    """Fold-in ranks items like the trained user row would (same top items for a training user)."""
    data = planted()
    model = mf()
    model.fit(data)
    assert model.user_vectors is not None
    u = 5
    seen = [data.item_ids[i] for i in data.items[data.users == u]]
    query = model.query_vectors([history(model, seen)])[0]
    trained = np.r_[model.user_vectors[u], 1.0]
    index = model.index_vectors()
    top_fold = set(np.argsort(-(index @ query))[: PER_USER + 4].tolist())
    top_trained = set(np.argsort(-(index @ trained))[: PER_USER + 4].tolist())
    assert len(top_fold & top_trained) >= PER_USER


# ---------------------------------------------------------------- warm start


def test_mf_warm_start_keeps_old_rows_and_adds_new_ones() -> None:
    old = mf()
    old.fit(planted(range(3)))
    before = old.index_vectors().copy()
    recent = planted(range(2, 4), seed=1, prefix="v")  # cluster 2 again, cluster 3 is new; 0 and 1 absent
    new = mf(epochs=15)
    report = new.fit(recent, warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids
    assert report.new_items == ITEMS_PER and new.n_items == old.n_items + ITEMS_PER
    absent = [i for i, item in enumerate(old.item_ids) if item[:2] in ("i0", "i1")]
    np.testing.assert_array_equal(new.index_vectors()[absent], before[absent])  # untouched, bit for bit
    refined = [i for i, item in enumerate(old.item_ids) if item.startswith("i2_")]
    assert not np.array_equal(new.index_vectors()[refined], before[refined])
    for c in range(CLUSTERS):  # old clusters still served well, the new one learnt
        assert cluster_precision(new, c) >= 0.8, c


def test_ncf_warm_start_keeps_old_rows_and_weights() -> None:
    old = ncf()
    old.fit(planted(range(3)))
    before = old.to_arrays()[1]
    new = ncf(epochs=15)
    report = new.fit(planted(range(2, 4), seed=1, prefix="v"), warm_from=old)
    after = new.to_arrays()[1]
    assert report.new_items == ITEMS_PER and new.item_ids[: old.n_items] == old.item_ids
    absent = [i for i, item in enumerate(old.item_ids) if item[:2] in ("i0", "i1")]
    for name in ("tables.gmf_item", "tables.gmf_hist", "tables.mlp_item", "tables.item_bias"):
        np.testing.assert_array_equal(after[name][absent], before[name][absent])
    assert not np.array_equal(after["mlp.0.weight"], before["mlp.0.weight"])  # refined, same shape
    for c in range(CLUSTERS):
        assert cluster_precision(new, c, exact=True) >= 0.8, c


def test_warm_start_rejects_an_incompatible_model() -> None:
    old = mf(epochs=1)
    old.fit(planted())
    with pytest.raises(ValueError, match="dim"):
        mf(dim=4, epochs=1).fit(planted(), warm_from=old)
    with pytest.raises(TypeError):
        ncf(epochs=1).fit(planted(), warm_from=old)


# ---------------------------------------------------------------- persistence and determinism


@pytest.mark.parametrize("make", [lambda: mf(loss="bce", epochs=3), lambda: ncf(epochs=3)])
def test_to_arrays_from_arrays_round_trip(make: Any) -> None:
    model = make()
    model.fit(planted())
    config, arrays = model.to_arrays()
    assert "device" not in config and "threads" not in config
    config = json.loads(json.dumps(config))  # tuples come back as lists
    assert all(a.dtype == np.float32 for a in arrays.values())
    back = type(model).from_arrays(config, {k: v.copy() for k, v in arrays.items()}, list(model.item_ids))
    hs = [history(model, ["i0_1", "i1_2"]), history(model, ["i3_3"]), empty()]
    for name in ("index_vectors", "similar_vectors"):
        np.testing.assert_array_equal(getattr(back, name)(), getattr(model, name)())
    np.testing.assert_array_equal(back.query_vectors(hs), model.query_vectors(hs))
    if isinstance(model, NCF):
        np.testing.assert_array_equal(back.score_all(hs), model.score_all(hs))
    rebuilt = type(model)(**config)  # every kwarg but device/threads
    assert rebuilt.to_arrays()[0] == config if isinstance(model, MatrixFactorization) else True


@pytest.mark.parametrize("make", [mf, ncf])
def test_same_seed_same_vectors(make: Any) -> None:
    data = planted()
    a, b, c = make(epochs=3, seed=7), make(epochs=3, seed=7), make(epochs=3, seed=8)
    for m in (a, b, c):
        m.fit(data)
    np.testing.assert_array_equal(a.index_vectors(), b.index_vectors())
    assert not np.array_equal(a.index_vectors(), c.index_vectors())


# ---------------------------------------------------------------- guards and bookkeeping


@pytest.mark.parametrize("make", [mf, ncf])
def test_non_finite_loss_raises(make: Any) -> None:
    with pytest.raises(FloatingPointError, match="not finite"):
        make(epochs=3, lr=1e30).fit(planted())  # the first Adam steps overflow the tables


@pytest.mark.parametrize("make", [mf, ncf])
def test_non_finite_weights_are_rejected(make: Any) -> None:
    data = planted()
    weights = data.weights.copy()
    weights[3] = np.inf
    bad = Interactions(data.users, data.items, weights, data.values, data.ts, data.user_ids, data.item_ids)
    with pytest.raises(ValueError, match="finite"):
        make(epochs=1).fit(bad)


@pytest.mark.parametrize("make", [mf, ncf])
def test_fit_report_and_epoch_callback(make: Any) -> None:
    data = planted()
    seen: list[tuple[int, float]] = []
    report = make(epochs=3, negatives=2).fit(data, on_epoch=lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == [0, 1, 2] and [x for _, x in seen] == report.losses
    assert report.samples == 3 * len(data) * (1 + 2)
    assert report.samples_per_s > 0 and report.device == "cpu" and report.new_items == 0


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss"):
        MatrixFactorization(loss="hinge")
    with pytest.raises(ValueError, match="fold_in"):
        MatrixFactorization(fold_in="magic")
    with pytest.raises(ValueError, match="variant"):
        NCF(variant="deep")
    with pytest.raises(ValueError, match="layers"):
        NCF(layers=(15, 8))


def test_sampled_negatives_avoid_positives_and_cover_the_pool() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(3), 10).astype(np.int64)
    items = np.concatenate([np.arange(10), np.arange(10, 20), np.arange(0, 20, 2)]).astype(np.int64)
    positives = PairSet.build(users, items, 40)
    pool = np.arange(20, dtype=np.int64)  # items 20..39 are outside the data: never drawn
    draws = sample_negatives(np.repeat(np.arange(3), 200).astype(np.int64), pool, 5, positives, rng, rounds=30)
    assert draws.shape == (600, 5) and draws.max() < 20
    rows = np.repeat(np.repeat(np.arange(3), 200), 5)
    assert not positives.contains(rows, draws.ravel()).any()
    assert set(draws[:200].ravel().tolist()) == set(range(10, 20))
    csr = UserCsr.build(users, items, np.ones(30, np.float32), 4)
    np.testing.assert_array_equal(csr.totals(), [10, 10, 10, 0])
