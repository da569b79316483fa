"""Item graph, random walks (DeepWalk, node2vec by rejection) and the walk skip-gram presets on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from tests.planted import PER_CLUSTER, planted
from trainer.models import registry
from trainer.models.deepwalk import DeepWalk
from trainer.models.walks import Graph, biased_step, cooccurrence_graph, is_edge, walk_starts, walks, window_pairs

FAST = {"dim": 16, "epochs": 4, "batch": 256, "group": 64, "shared": 32, "lr": 0.05, "walks_per_node": 4}


def cluster(item: str) -> str:
    return item.split("_")[0]


def test_graph_joins_only_items_within_the_window_of_one_user() -> None:
    users, items, ts = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 1, 2])
    g = cooccurrence_graph(users, items, ts, 5, window=1)
    edges = {(v, int(x)) for v in range(5) for x in g.indices[g.indptr[v] : g.indptr[v + 1]]}
    assert edges == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    assert len(cooccurrence_graph(users, items, ts, 5, window=2).indices) == 8


def test_walks_follow_edges_in_proportion_to_weight() -> None:
    g = Graph.from_edges(np.array([0, 0, 1, 2]), np.array([1, 2, 0, 0]), np.array([3.0, 1.0, 1.0, 1.0]), 3)
    rng = np.random.default_rng(0)
    (block,) = list(walks(g, np.zeros(20_000, np.int64), 2, rng))
    assert set(block[:, 1].tolist()) == {1, 2}
    assert np.mean(block[:, 1] == 1) == pytest.approx(0.75, abs=0.02)
    assert is_edge(g, np.array([0, 0, 1, 1]), np.array([1, 2, 2, 0])).tolist() == [True, True, False, True]


def test_node2vec_rejection_matches_the_second_order_probabilities() -> None:
    # path 0 - 1 - 2 plus triangle 1 - 3 - 0: from 1 having come from 0, candidates 0 (return), 3 (near 0), 2 (far)
    src = np.array([0, 1, 1, 1, 2, 3, 0, 3])
    dst = np.array([1, 0, 2, 3, 1, 1, 3, 0])
    order = np.lexsort((dst, src))
    g = Graph.from_edges(src[order], dst[order], np.ones(8), 4)
    p, q, n = 2.0, 0.25, 60_000
    nxt = biased_step(g, np.zeros(n, np.int64), np.ones(n, np.int64), p, q, np.random.default_rng(1))
    alpha = {0: 1 / p, 3: 1.0, 2: 1 / q}
    total = sum(alpha.values())
    for node, a in alpha.items():
        assert np.mean(nxt == node) == pytest.approx(a / total, abs=0.01)


def test_window_pairs_stay_inside_the_walk_and_the_window() -> None:
    block = np.arange(20, dtype=np.int32).reshape(2, 10)
    targets, contexts = window_pairs(block, 2, 6, np.random.default_rng(0))
    assert len(targets) == 20
    gap = np.abs(contexts - targets[:, None])
    assert gap.min() >= 1 and gap.max() <= 2  # never itself, never past the window, never the other walk


def test_walk_starts_cover_every_connected_node() -> None:
    g = cooccurrence_graph(np.array([0, 0]), np.array([0, 2]), np.array([0, 1]), 4)
    assert sorted(walk_starts(g, 3, np.random.default_rng(0)).tolist()) == [0, 0, 0, 2, 2, 2]


@pytest.mark.parametrize("preset", ["deepwalk", "node2vec"])
def test_planted_clusters_are_recovered_and_fit_is_reproducible(preset: str) -> None:
    data = planted()
    model = registry.build_preset(preset, seed=3, device="cpu", threads=1, **FAST)
    model.fit(data)
    sims = model.similar_vectors() @ model.similar_vectors().T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :5]
    ids = model.item_ids
    assert np.mean([cluster(ids[j]) == cluster(ids[i]) for i in range(len(ids)) for j in near[i]]) > 0.9
    again = registry.build_preset(preset, seed=3, device="cpu", threads=1, **FAST)
    again.fit(data)
    np.testing.assert_array_equal(again.index_vectors(), model.index_vectors())


def test_warm_start_keeps_rows_of_items_the_new_data_does_not_mention() -> None:
    old = DeepWalk(seed=0, device="cpu", threads=1, **FAST)
    old.fit(planted())
    new = DeepWalk(seed=0, device="cpu", threads=1, **FAST)
    report = new.fit(planted(n_users=40, clusters=range(4, 6), seed=9), warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids and report.new_items == 2 * PER_CLUSTER
    np.testing.assert_array_equal(new.index_vectors()[: old.n_items, :-1], old.index_vectors()[:, :-1])
    config, arrays = new.to_arrays()
    back = DeepWalk.from_arrays(config, arrays, new.item_ids)
    assert isinstance(back, DeepWalk) and back.walk == new.walk
    np.testing.assert_array_equal(back.index_vectors(), new.index_vectors())
