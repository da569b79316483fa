"""Recall@K and NDCG@K as the literature defines them (LightGCN's evaluation code), on a hand-computed example."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trainer.datasets import load_dataset
from trainer.evaluation.scoring import evaluate
from trainer.evaluation.tuning import tune
from trainer.interactions import FloatArray, Int32Array, Interactions


def log(users: list[int], items: list[int], n_users: int, n_items: int) -> Interactions:
    """Rows (user, item) over fixed id maps u0.., i0.."""
    n = len(users)
    return Interactions(
        np.asarray(users, np.int32),
        np.asarray(items, np.int32),
        np.ones(n, np.float32),
        np.full(n, np.nan, np.float32),
        np.zeros(n, np.int64),
        [f"u{u}" for u in range(n_users)],
        [f"i{i}" for i in range(n_items)],
    )


class Matrix:
    name = "matrix"

    def __init__(self, scores: list[list[float]]) -> None:
        self.scores = np.asarray(scores, np.float32)

    def score(self, users: Int32Array) -> FloatArray:
        return self.scores[users].copy()


def test_recall_and_ndcg_match_a_hand_computed_example() -> None:
    # 3 users, 6 items. u0 trained on i0; u1 on i1; u2 on nothing in test (no test items: not evaluated).
    train = log([0, 1, 2], [0, 1, 2], 3, 6)
    test = log([0, 0, 0, 1], [3, 5, 4, 2], 3, 6)
    scores = [
        [9.0, 5.0, 4.0, 3.0, 1.0, 2.0],  # i0 masked (train) -> ranking i1, i2, i3, i5, i4
        [1.0, 9.0, 8.0, 0.0, 0.0, 0.0],  # i1 masked -> i2 first
        [9.0, 9.0, 9.0, 9.0, 9.0, 9.0],
    ]
    out = evaluate(Matrix(scores), train, test, ks=(2, 4))
    # u0, K=2: no hit in (i1, i2): recall 0, ndcg 0. u1: hit at rank 0 -> recall 1, ndcg 1.
    assert out["recall@2"] == pytest.approx(0.5) and out["ndcg@2"] == pytest.approx(0.5)
    # u0, K=4: hits i3 (rank 2) and i5 (rank 3) of 3 test items: recall 2/3;
    # DCG = 1/log2(4) + 1/log2(5), ideal over min(4, 3) = 3 positions: 1 + 1/log2(3) + 1/log2(4)
    dcg = 1 / math.log2(4) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["recall@4"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["ndcg@4"] == pytest.approx((dcg / idcg + 1) / 2)
    assert out["users"] == 2  # only users with test items


def test_a_given_valid_split_is_the_tuning_split() -> None:
    train = log([0, 0, 1], [0, 1, 0], 2, 30)
    valid = log([0, 1], [2, 1], 2, 30)  # 30 items: a score of 0 among 1s falls out of the top 20
    seen: list[int] = []

    def make(part: Interactions, params: dict[str, int]) -> Matrix:
        seen.append(len(part))
        scores = np.ones((2, 30))
        scores[0, 2], scores[1, 1] = 10.0 * params["z"], 10.0
        return Matrix(scores.tolist())

    best, trials = tune(make, train, {"z": [0, 1]}, valid=valid)
    assert seen == [3, 3] and best == {"z": 1}  # fitted on all of train, scored on valid
    assert [round(r, 3) for _, r in trials] == [0.5, 1.0]


def test_format_names_a_split_of_two_item_lines(tmp_path: Path) -> None:
    for split, lines in (("train", ["0 1 2", "1 2 3"]), ("test", ["0 3", "1 1"])):
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset(tmp_path, fmt="adjacency")
    assert len(data.train) == 4 and data.test is not None and len(data.test) == 2
    assert set(data.train.item_ids) == {"1", "2", "3"}
