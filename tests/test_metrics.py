"""trainer.evaluation.metrics against hand-computed cases and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluation.metrics import (
    ItemSets,
    auc,
    catalog_coverage,
    hit_rate,
    hits_at,
    ndcg_at_k,
    recall_at_k,
    sampled_ndcg,
    tail_items,
    tail_share,
    top_k,
)


def test_item_sets_group_take_and_contains() -> None:
    sets = ItemSets.from_pairs([2, 0, 2, 2, 0], [5, 1, 3, 5, 4], n_rows=3)
    assert sets.lengths().tolist() == [2, 0, 2]  # duplicate (2, 5) dropped
    assert sets.row(0).tolist() == [1, 4] and sets.row(2).tolist() == [3, 5]
    taken = sets.take([2, 1, 0])
    assert taken.row(0).tolist() == [3, 5] and taken.row(1).tolist() == [] and taken.row(2).tolist() == [1, 4]
    got = taken.contains([[0, 0], [2, 1]], [[5, 4], [4, 4]], n_items=10)
    assert got.tolist() == [[True, False], [True, False]]
    assert ItemSets.from_lists([[1], [], [2, 0]]).row(2).tolist() == [0, 2]


def test_top_k_orders_by_score_then_index() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -np.inf], [3.0, 2.0, 1.0, 0.0, 5.0]], np.float32)
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [4, 0, 1]]
    assert top_k(scores, 9).shape == (2, 5)  # k capped at n_items


def test_recall_and_ndcg_hand_computed() -> None:
    relevant = ItemSets.from_lists([[2, 9], [7], []])
    ranked = np.array([[1, 2, 3, 4], [7, 1, 2, 3], [0, 1, 2, 3]])
    hits = hits_at(ranked, relevant, n_items=10)
    assert hits.tolist() == [[False, True, False, False], [True, False, False, False], [False] * 4]
    n_rel = relevant.lengths()
    assert recall_at_k(hits, n_rel, 1).tolist() == [0.0, 1.0, 0.0]
    assert recall_at_k(hits, n_rel, 2).tolist() == [0.5, 1.0, 0.0]
    ndcg = ndcg_at_k(hits, n_rel, 2)
    # user 0: one hit at rank 1 -> 1/log2(3); ideal: two hits -> 1 + 1/log2(3)
    assert ndcg[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg[1] == pytest.approx(1.0) and ndcg[2] == 0.0
    # ideal DCG is capped at k: two relevant items, one hit at rank 0 of a top-1 list is perfect
    assert ndcg_at_k(np.array([[True]]), [2], 1)[0] == pytest.approx(1.0)


def test_sampled_hit_rate_and_ndcg() -> None:
    pos = np.array([0.5, 0.95])
    neg = np.array([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2]])
    assert hit_rate(pos, neg, 1).tolist() == [0.0, 1.0]
    assert hit_rate(pos, neg, 2).tolist() == [1.0, 1.0]
    assert sampled_ndcg(pos, neg, 2).tolist() == pytest.approx([1 / math.log2(3), 1.0])
    assert sampled_ndcg(pos, neg, 1).tolist() == pytest.approx([0.0, 1.0])


def test_sampled_metrics_break_ties_at_random_in_expectation() -> None:
    pos = np.array([0.5])
    neg = np.array([[0.5, 0.5, 0.1]])  # the positive is equally likely at rank 0, 1 or 2
    assert hit_rate(pos, neg, 1)[0] == pytest.approx(1 / 3)
    assert hit_rate(pos, neg, 2)[0] == pytest.approx(2 / 3)
    assert sampled_ndcg(pos, neg, 3)[0] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 3)
    constant = hit_rate(np.zeros(1), np.zeros((1, 99)), 10)  # a constant scorer is no better than chance
    assert constant[0] == pytest.approx(0.1)


def test_auc_hand_computed_and_brute_force() -> None:
    assert auc([0.9, 0.4], [0.5, 0.1]) == pytest.approx(0.75)
    assert auc([1.0], [1.0]) == pytest.approx(0.5)
    assert auc([1.0, 2.0], [0.0]) == 1.0 and auc([0.0], [1.0, 2.0]) == 0.0
    rng = np.random.default_rng(3)
    pos = rng.integers(0, 5, 40).astype(float)  # many ties
    neg = rng.integers(0, 4, 30).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_coverage_and_tail_share() -> None:
    assert catalog_coverage([[0, 1], [1, 2]], 10) == pytest.approx(0.3)
    popularity = [10, 5, 0, 1, 3]
    assert tail_items(popularity, 0.2).tolist() == [False, True, True, True, True]
    assert tail_items(popularity, 0.4).tolist() == [False, False, True, True, True]
    assert tail_share([[0, 1], [0, 2]], popularity, 0.2) == pytest.approx(0.5)
    assert tail_share([[0, 1], [0, 2]], popularity, 0.4) == pytest.approx(0.25)
    assert tail_items([1, 1, 1, 1, 1], 0.2).tolist() == [False, True, True, True, True]  # ties: lower index is head
