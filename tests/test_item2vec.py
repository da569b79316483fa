"""item2vec: the SGNS kernel, pair and negative sampling, planted structure, warm start, persistence.

Everything runs on the CPU on small synthetic data the tests build.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from trainer.interactions import Interactions
from trainer.models.base import History
from trainer.models.item2vec import Item2Vec
from trainer.models.sgns import StepSizes, Workspace, collision_scale, plan_epoch, sgd_step
from trainer.sampling import NegativeSampler, UserSets, negative_probs, popularity_ranks, sample_pairs

CLUSTERS, PER_CLUSTER = 5, 20
FAST: dict[str, Any] = {
    "dim": 16,
    "epochs": 8,
    "batch": 256,
    "group": 64,
    "shared": 32,
    "lr": 0.05,
    "threads": 1,
    "device": "cpu",
}


def planted(
    n_users: int = 300, per_user: int = 8, clusters: range = range(CLUSTERS), seed: int = 0, prefix: str = "i"
) -> Interactions:
    """Users who only consume inside one cluster; item ``{prefix}{c}_{k}`` is item k of cluster c."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        c = list(clusters)[u % len(clusters)]
        for k in rng.choice(PER_CLUSTER, per_user, replace=False):
            users.append(f"{prefix}u{u}")
            items.append(f"{prefix}{c}_{k}")
    return Interactions.from_ids(users, items)


def cluster_of(item_id: str) -> str:
    return item_id.split("_")[0]


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


@pytest.fixture(scope="module")
def fitted() -> tuple[Item2Vec, Interactions]:
    data = planted()
    model = Item2Vec(**FAST)
    model.fit(data)
    return model, data


# ---------------------------------------------------------------- sampling


def test_pairs_stay_inside_each_users_set_and_never_pair_an_item_with_itself() -> None:
    users = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3])
    items = np.array([5, 6, 7, 1, 2, 9, 0, 4, 4, 8, 3])  # user 2 has one item; user 3 repeats item 4
    sets = UserSets.build(users, items, n_users=4)
    targets, contexts = sample_pairs(sets, context=6, rng=np.random.default_rng(1))
    owned = {u: set(items[users == u].tolist()) for u in range(4)}
    assert len(targets) == sets.n_pairs(1) == 3 + 2 + 4  # every positive of users with >= 2 distinct items
    assert contexts.shape == (len(targets), 6)
    assert not (contexts == targets[:, None]).any()
    assert 9 not in targets and 9 not in contexts  # the single-item user gives nothing
    for t, row in zip(targets.tolist(), contexts.tolist(), strict=True):
        owner = next(u for u, s in owned.items() if t in s)
        assert set(row) <= owned[owner] - {t}


def test_pairs_cover_the_other_items_uniformly() -> None:
    sets = UserSets.build(np.zeros(4, np.int64), np.arange(4), n_users=1)
    targets, contexts = sample_pairs(sets, context=3000, rng=np.random.default_rng(2))
    for t, row in zip(targets.tolist(), contexts, strict=True):
        freq = np.bincount(row, minlength=4) / row.size
        expected = np.where(np.arange(4) == t, 0.0, 1 / 3)
        np.testing.assert_allclose(freq, expected, atol=0.03)


def test_log_uniform_probabilities_follow_the_formula_by_popularity_rank() -> None:
    counts = np.array([3.0, 50.0, 0.0, 7.0, 50.0])
    ranks = popularity_ranks(counts)
    np.testing.assert_array_equal(ranks, [3, 0, 4, 2, 1])  # ties broken by row index
    expected = np.log((ranks + 2.0) / (ranks + 1.0)) / np.log(len(counts) + 1.0)
    np.testing.assert_allclose(negative_probs(counts, "log_uniform"), expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["log_uniform", "unigram", "uniform"])
def test_sampler_draws_match_their_distribution(kind: str) -> None:
    counts = np.random.default_rng(3).zipf(1.5, 40).astype(np.float64)
    counts[7] = 0.0
    probs = negative_probs(counts, kind)
    if kind == "unigram":
        np.testing.assert_allclose(probs, counts**0.75 / (counts**0.75).sum(), rtol=1e-12)
        assert probs[7] == 0.0
    draws = NegativeSampler(probs).draw(400_000, np.random.default_rng(4))
    freq = np.bincount(draws, minlength=len(counts)) / draws.size
    tolerance = 5 * np.sqrt(probs * (1 - probs) / draws.size) + 1e-9  # 5 standard errors per item
    assert np.all(np.abs(freq - probs) <= tolerance)


# ---------------------------------------------------------------- kernel


def test_sgd_step_equals_one_autograd_sgd_step() -> None:
    gen = torch.Generator().manual_seed(0)
    n, d, n_t, n_c, groups, n_n = 40, 8, 24, 3, 3, 6
    win, wout = torch.randn(n, d, generator=gen) * 0.3, torch.randn(n, d, generator=gen) * 0.3
    rng = np.random.default_rng(0)
    sizes = StepSizes(negatives=2, shared=n_n, group=n_t // groups, batch=n_t, neg_cap=0.0)
    plan = plan_epoch(
        rng.integers(0, n, n_t),
        rng.integers(0, n, (n_t, n_c)),
        rng.integers(0, n, (groups, n_n)),
        sizes,
        torch.device("cpu"),
    )
    a, b = win.clone().requires_grad_(), wout.clone().requires_grad_()
    wt = a[plan.targets]
    pos = (wt[:, None, :] * b[plan.contexts.view(n_t, n_c)]).sum(-1)
    neg = torch.einsum("gtd,gnd->gtn", wt.view(groups, -1, d), b[plan.negs])
    softplus = torch.nn.functional.softplus
    loss = softplus(-pos).sum() + n_c * 2 / n_n * softplus(neg).sum()
    loss.backward()  # type: ignore[no-untyped-call]
    first = float((softplus(-pos[: n_t // groups]).sum() + n_c * 2 / n_n * softplus(neg[0]).sum()).detach())
    ws = Workspace(n_t, n_c, sizes, d, torch.device("cpu"))
    head = sgd_step(win.clone(), wout.clone(), plan, (0, n_t), 0.1, sizes, ws, 1)
    assert head is not None and float(head) == pytest.approx(first, rel=1e-5)
    got = sgd_step(win, wout, plan, (0, n_t), 0.1, sizes, ws, groups)
    assert got is not None and float(got) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(win, a.detach() - 0.1 * a.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(wout, b.detach() - 0.1 * b.grad, atol=1e-6, rtol=1e-5)


def test_collision_scale_caps_rows_drawn_often_in_one_batch() -> None:
    batch = np.array([0, 0, 0, 0, 1, 1])
    rows = np.array([2, 2, 2, 5, 2, 3])
    np.testing.assert_allclose(collision_scale(batch, rows, cap=1.0), [1 / 3, 1 / 3, 1 / 3, 1, 1, 1])
    np.testing.assert_allclose(collision_scale(batch, rows, cap=0.0), np.ones(6))


# ---------------------------------------------------------------- model


def test_planted_clusters_give_in_cluster_neighbours_and_recommendations(fitted: tuple[Item2Vec, Interactions]) -> None:
    model, _ = fitted
    ids = model.item_ids
    near = neighbours(model.similar_vectors(), 5)
    same = np.mean([cluster_of(ids[j]) == cluster_of(ids[i]) for i in range(len(ids)) for j in near[i]])
    assert same > 0.9  # random neighbours would be ~0.2
    index = model.item_index()
    history = [index[f"i2_{k}"] for k in (0, 1, 2)]
    query = model.query_vectors([History(np.array(history), np.ones(3, np.float32))])
    scores = (query @ model.index_vectors().T)[0]
    scores[history] = -np.inf
    top = np.argsort(-scores)[:10]
    assert np.mean([cluster_of(ids[j]) == "i2" for j in top]) >= 0.8


def test_empty_history_gives_a_zero_query_row(fitted: tuple[Item2Vec, Interactions]) -> None:
    model, _ = fitted
    rows = model.query_vectors(
        [History(np.zeros(0, np.int64), np.zeros(0, np.float32)), History(np.array([0]), np.ones(1, np.float32))]
    )
    assert rows.dtype == np.float32 and rows.shape[1] == model.index_vectors().shape[1]
    assert not rows[0].any() and rows[1].any()


def test_items_without_positives_still_get_rows() -> None:
    data = planted(n_users=40)
    ids = [*data.item_ids, "never_seen"]
    data = Interactions(data.users, data.items, data.weights, data.values, data.ts, data.user_ids, ids)
    model = Item2Vec(**FAST)
    report = model.fit(data)
    assert model.item_ids == ids and model.index_vectors().shape[0] == len(ids)
    assert report.samples == 40 * 8 * 4 * FAST["epochs"] and report.samples_per_s > 0
    assert np.isfinite(model.index_vectors()).all()


def test_same_seed_same_model_other_seed_other_model() -> None:
    data = planted(n_users=60)
    first, second, other = (Item2Vec(**{**FAST, "seed": s}) for s in (7, 7, 8))
    for m in (first, second, other):
        m.fit(data)
    np.testing.assert_array_equal(first.table("in"), second.table("in"))
    np.testing.assert_array_equal(first.table("out"), second.table("out"))
    assert not np.array_equal(first.table("in"), other.table("in"))


def test_two_threads_train_the_same_model_to_the_bit() -> None:
    """threads=2 plans the next epoch on a helper thread and runs torch's kernels on two threads; neither may
    change the arithmetic (seeded fits must reproduce on any machine)."""
    data = planted(n_users=120)
    one, two = Item2Vec(**{**FAST, "threads": 1}), Item2Vec(**{**FAST, "threads": 2})
    losses = [m.fit(data).losses for m in (one, two)]
    assert losses[0] == losses[1]
    np.testing.assert_array_equal(one.table("in"), two.table("in"))
    np.testing.assert_array_equal(one.table("out"), two.table("out"))


def test_round_trip_through_arrays_gives_identical_vectors(fitted: tuple[Item2Vec, Interactions]) -> None:
    model, _ = fitted
    config, arrays = model.to_arrays()
    assert "device" not in config and "threads" not in config
    config = json.loads(json.dumps(config))
    assert all(a.dtype == np.float32 for a in arrays.values())
    back = Item2Vec.from_arrays(config, arrays, list(model.item_ids))
    hist = [History(np.array([1, 4]), np.array([1.0, 0.5], np.float32))]
    np.testing.assert_array_equal(back.index_vectors(), model.index_vectors())
    np.testing.assert_array_equal(back.query_vectors(hist), model.query_vectors(hist))
    np.testing.assert_array_equal(back.similar_vectors(), model.similar_vectors())
    assert back.to_arrays()[0] == model.to_arrays()[0]


def test_tied_tables_train_and_round_trip() -> None:
    model = Item2Vec(**{**FAST, "tied": True})
    model.fit(planted(n_users=100))
    config, arrays = model.to_arrays()
    assert "out" not in arrays
    back = Item2Vec.from_arrays(config, arrays, model.item_ids)
    np.testing.assert_array_equal(back.index_vectors(), model.index_vectors())


def test_similar_vectors_are_unit_rows_and_zero_rows_stay_zero(fitted: tuple[Item2Vec, Interactions]) -> None:
    model, _ = fitted
    config, arrays = model.to_arrays()
    arrays["in"][3] = 0.0
    sims = Item2Vec.from_arrays(config, arrays, model.item_ids).similar_vectors()
    assert np.isfinite(sims).all() and not sims[3].any()
    np.testing.assert_allclose(np.linalg.norm(np.delete(sims, 3, axis=0), axis=1), 1.0, rtol=1e-5)


def test_divergence_raises_instead_of_publishing_nan() -> None:
    model = Item2Vec(**{**FAST, "lr": 1e30, "epochs": 2})
    with pytest.raises(FloatingPointError):
        model.fit(planted(n_users=60))


def test_warm_start_adds_new_items_and_keeps_untouched_neighbourhoods(fitted: tuple[Item2Vec, Interactions]) -> None:
    old, _ = fitted
    # New data: fresh users of two new clusters plus fresh users of old cluster 0 only.
    fresh = planted(n_users=120, clusters=range(5, 7), seed=5)
    revisit = planted(n_users=60, clusters=range(1), seed=6, prefix="r")
    users = [fresh.user_ids[u] for u in fresh.users] + [revisit.user_ids[u] for u in revisit.users]
    items = [fresh.item_ids[i] for i in fresh.items]
    items += [revisit.item_ids[i].replace("r0_", "i0_") for i in revisit.items]
    new = Item2Vec(**FAST)
    report = new.fit(Interactions.from_ids(users, items), warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids
    assert report.new_items == 2 * PER_CLUSTER and new.n_items == old.n_items + 2 * PER_CLUSTER
    untouched = [i for i, item in enumerate(old.item_ids) if cluster_of(item) != "i0"]
    np.testing.assert_array_equal(new.table("in")[untouched], old.table("in")[untouched])
    np.testing.assert_array_equal(new.table("out")[untouched], old.table("out")[untouched])
    before = neighbours(old.similar_vectors()[untouched], 5)
    after = neighbours(new.similar_vectors()[untouched], 5)
    kept = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(before, after, strict=True)])
    assert kept >= 0.95
    near = neighbours(new.similar_vectors(), 5)
    ids = new.item_ids
    same = np.mean([cluster_of(ids[j]) == cluster_of(ids[i]) for i in range(len(ids)) for j in near[i]])
    assert same > 0.85  # old clusters intact, new clusters learnt
