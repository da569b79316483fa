"""A search whose best setting sits at an edge of its grid goes past that edge until the best is inside."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.test_metric_definition import Matrix, log
from trainer.evaluation.tuning import beyond, tune
from trainer.interactions import Interactions

USERS, ITEMS = 40, 60


def peaked(peak_dim: float, peak_reg: float) -> tuple[Interactions, Interactions, object]:
    """train, valid, make: the validation recall@20 of (dim, reg) falls with the log-distance from the peak.

    Every user has one validation item; a candidate ranks it into the top 20 for the first ``hits`` users."""
    train = log(list(range(USERS)), [0] * USERS, USERS, ITEMS)
    valid = log(list(range(USERS)), [1 + u for u in range(USERS)], USERS, ITEMS)

    def make(_part: Interactions, params: dict[str, float]) -> Matrix:
        distance = abs(math.log2(params["dim"] / peak_dim)) + abs(math.log10(params["reg"] / peak_reg))
        hits = max(0, USERS - round(4 * distance))
        scores = np.zeros((USERS, ITEMS))
        scores[np.arange(USERS), 1 + np.arange(USERS)] = -1.0  # below the 59 others: out of the top 20
        scores[np.arange(hits), 1 + np.arange(hits)] = 1.0
        return Matrix(scores.tolist())

    return train, valid, make


def test_beyond_steps_past_an_end_only() -> None:
    assert beyond([64, 128, 256], 256) == 512
    assert beyond([64, 128, 256], 64) == 32
    assert beyond([64, 128, 256], 128) is None  # inside
    assert beyond([0.5, 1.5, 3.0], 0.5) == 0.5 * 0.5 / 1.5
    assert beyond([64, 128, 256], 256, (4.0, 256.0)) is None  # the bound
    assert beyond([1, 2], 1) is None  # 0.5 rounds to 0: not a positive count
    assert beyond(["a", "b"], "b") is None and beyond([3], 3) is None and beyond([True, False], True) is None


def test_search_goes_past_the_edges_until_the_best_is_inside() -> None:
    train, valid, make = peaked(peak_dim=1024, peak_reg=0.01)
    grid = {"dim": [64, 128], "reg": [1.0, 10.0]}
    best, trials = tune(make, train, grid, valid=valid, extend=10)  # type: ignore[arg-type]
    assert best["dim"] == 1024 and best["reg"] == pytest.approx(0.01)
    assert len(trials) == 4 + 4 + 3  # the grid; dim 256, 512, 1024, 2048; reg 0.1, 0.01, 0.001
    tried = [(p["dim"], round(p["reg"], 6)) for p, _ in trials[4:]]
    assert tried == [(256, 1.0), (512, 1.0), (1024, 1.0), (2048, 1.0), (1024, 0.1), (1024, 0.01), (1024, 0.001)]


def test_search_stops_at_its_budget_and_bounds() -> None:
    train, valid, make = peaked(peak_dim=1024, peak_reg=1.0)
    grid = {"dim": [64, 128], "reg": [1.0, 10.0]}
    best, trials = tune(make, train, grid, valid=valid, extend=2)  # type: ignore[arg-type]
    assert len(trials) == 6 and best == {"dim": 512, "reg": 1.0}
    best, trials = tune(make, train, grid, valid=valid, extend=10, bounds={"dim": (4, 256)})  # type: ignore[arg-type]
    assert best["dim"] == 256 and max(p["dim"] for p, _ in trials) == 256
    _, trials = tune(make, train, grid, valid=valid)  # type: ignore[arg-type]
    assert len(trials) == 4  # no budget: the grid only
