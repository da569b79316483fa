"""trainer.evaluation.pairs (seed 001's item-pair AUC) on hand-made and planted data."""

from __future__ import annotations

import numpy as np
import pytest

from bench.pairs import item_vectors, table
from trainer.evaluation.metrics import auc
from trainer.evaluation.pairs import (
    aligned_vectors,
    build_pair_test,
    centered,
    consecutive_pairs,
    cosine,
    holdout_users,
    pair_auc,
    pair_keys,
    sample_negatives,
    unique_pairs,
)
from trainer.interactions import Interactions

N_CLUSTERS = 10
PER_CLUSTER = 20


def planted(n_users: int = 400, per_user: int = 8, seed: int = 0) -> Interactions:
    """User u consumes ``per_user`` distinct items of cluster u % 10 (item i is in cluster i // 20), in random order.

    Consecutive pairs cover about 70% of the in-cluster pairs, so held-out users still have novel ones.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        cluster = u % N_CLUSTERS
        for i in rng.choice(PER_CLUSTER, per_user, replace=False) + cluster * PER_CLUSTER:
            users.append(f"u{u}")
            items.append(f"i{i}")
    ts = rng.permutation(len(users)).astype(np.int64) * 1000
    return Interactions.from_ids(users, items, ts=ts)


def cluster_of(data: Interactions) -> np.ndarray:
    return np.array([int(i[1:]) // PER_CLUSTER for i in data.item_ids])


def test_auc_matches_a_hand_computed_case() -> None:
    # pairs (pos, neg): 0.9 beats all three; 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.5 -> (3 + 1.5) / 6
    assert auc([0.9, 0.4], [0.5, 0.1, 0.4]) == pytest.approx(0.75)
    assert auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auc([0.0], [1.0]) == 0.0
    assert auc([1.0, 1.0], [1.0]) == 0.5


def test_consecutive_pairs_follow_time_order_per_user() -> None:
    # u1: a(t3) b(t1) c(t2) -> b c a ; u2: c a a(negative) a -> (a, c) once; repeats make no pair
    data = Interactions.from_ids(
        ["u1", "u1", "u1", "u2", "u2", "u2", "u2"],
        ["a", "b", "c", "c", "a", "b", "a"],
        weights=[1, 1, 1, 1, 1, 0, 1],
        ts=[3, 1, 2, 5, 6, 7, 8],
    )
    a, b, c = 0, 1, 2
    users, pairs = consecutive_pairs(data)
    assert users.tolist() == [0, 0, 1]
    assert pairs.tolist() == [[b, c], [a, c], [a, c]]
    assert unique_pairs(pairs, data.n_items).tolist() == [[a, c], [b, c]]
    assert pair_keys([[c, a]], 3).tolist() == pair_keys([[a, c]], 3).tolist() == [2]


def test_holdout_users_moves_whole_users() -> None:
    data = planted(n_users=50)
    train, held = holdout_users(data, 0.2, seed=3)
    assert len(train) + len(held) == len(data)
    assert not set(train.users.tolist()) & set(held.users.tolist())
    assert len(set(held.users.tolist())) == 10


def test_sample_negatives_avoids_excluded_pairs() -> None:
    rng = np.random.default_rng(0)
    excluded = pair_keys([[0, 1], [1, 2]], 4)
    neg = sample_negatives([0, 1, 2, 3], 200, excluded, 4, rng)
    assert neg.shape == (200, 2)
    assert (neg[:, 0] < neg[:, 1]).all()
    assert not np.isin(pair_keys(neg, 4), excluded).any()
    with pytest.raises(ValueError, match="found 0 of 5"):
        sample_negatives([0, 1], 5, pair_keys([[0, 1]], 2), 2, rng)


def test_pair_test_holds_out_novel_pairs_of_trained_items() -> None:
    data = planted()
    train, test = build_pair_test(data, frac=0.2, seed=0)
    trained = train.positives().item_counts() > 0
    train_keys = pair_keys(consecutive_pairs(train)[1], data.n_items)
    assert len(test.positives) == len(test.negatives) > 0
    assert trained[test.positives].all() and trained[test.negatives].all()
    assert np.array_equal(test.trained, trained)
    assert not np.isin(pair_keys(test.positives, data.n_items), train_keys).any()
    assert np.isin(pair_keys(test.seen, data.n_items), train_keys).all()
    every = pair_keys(consecutive_pairs(data)[1], data.n_items)
    assert not np.isin(pair_keys(test.negatives, data.n_items), every).any()
    clusters = cluster_of(data)
    assert (clusters[test.positives[:, 0]] == clusters[test.positives[:, 1]]).all()


def test_cluster_vectors_score_near_one_and_random_ones_near_half() -> None:
    data = planted()
    _, test = build_pair_test(data, seed=0)
    rng = np.random.default_rng(1)
    oracle = np.eye(N_CLUSTERS, dtype=np.float32)[cluster_of(data)] + 0.05 * rng.standard_normal(
        (data.n_items, N_CLUSTERS)
    ).astype(np.float32)
    assert pair_auc(oracle, test)["auc"] > 0.95
    noise = rng.standard_normal((data.n_items, 32)).astype(np.float32)
    assert pair_auc(noise, test)["auc"] == pytest.approx(0.5, abs=0.1)


def test_cosine_and_aligned_vectors() -> None:
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]], np.float32)
    assert cosine(vectors, [[0, 1], [0, 2]]).tolist() == pytest.approx([1.0, 0.0])
    aligned = aligned_vectors(vectors, ["x", "y", "z"], ["z", "new", "x"])
    assert aligned.tolist() == [[0.0, 3.0], [0.0, 0.0], [1.0, 0.0]]
    assert cosine(aligned, [[1, 2]]).tolist() == [0.0]  # an unknown item's zero row scores 0
    rows = np.array([True, False, True])
    assert centered(aligned, rows).tolist() == [[-0.5, 1.5], [-0.5, -1.5], [0.5, -1.5]]  # less the mean of rows


def test_a_trained_model_finds_the_planted_pairs() -> None:
    data = planted()
    train, test = build_pair_test(data, seed=0)
    vectors = item_vectors("gensim", train, seed=0, threads=1)
    figures = pair_auc(vectors, test)
    assert figures["auc"] > 0.9, figures
    assert "gensim" in table({"gensim": {**figures, "pairs": len(test.positives), "seconds": 0.1}})
    assert "FAILED: boom" in table({"x": {"error": "boom"}})
