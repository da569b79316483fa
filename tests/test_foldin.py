"""Serving's fold-in (Woodbury for short histories, direct for long ones) against training's exact solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models.foldin import FoldIn
from trainer.models.ials import _Csr, solve_rows


def exact(
    items: np.ndarray, a0: float, positions: list[np.ndarray], weights: list[np.ndarray], reg: np.ndarray
) -> np.ndarray:
    """ials.solve_rows with the exact (Cholesky) solver: what training computes for a user."""
    rows = np.concatenate([np.full(len(p), k) for k, p in enumerate(positions)])
    csr = _Csr.build(rows, np.concatenate(positions), np.concatenate(weights), len(positions), torch.device("cpu"))
    got = solve_rows(
        csr, torch.from_numpy(items), a0, torch.from_numpy(reg.astype(np.float32)), torch.arange(len(positions))
    )
    return got.numpy()


def problem(
    lengths: list[int], dim: int = 16, n_items: int = 300, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    items = (rng.normal(size=(n_items, dim)) * 0.3).astype(np.float32)
    positions = [rng.integers(0, n_items, n).astype(np.int64) for n in lengths]  # repeats included
    weights = [rng.uniform(0.01, 1.0, n).astype(np.float32) for n in lengths]
    reg = rng.uniform(0.5, 3.0, len(lengths))
    return items, positions, weights, reg


@pytest.mark.parametrize("lengths", [[1, 2, 3, 5, 8, 13], [15, 16, 17, 30, 31], [40, 70, 150], [1, 9, 16, 33, 64]])
def test_fold_in_matches_the_training_solve(lengths: list[int]) -> None:
    """Short histories go through Woodbury, those of d or more items solve directly: same rows."""
    items, positions, weights, reg = problem(lengths)
    got = FoldIn(items, 0.2).solve(positions, weights, reg)
    want = exact(items, 0.2, positions, weights, reg)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_both_paths_agree_on_the_same_histories(monkeypatch: pytest.MonkeyPatch) -> None:
    items, positions, weights, reg = problem([3, 7, 12, 20, 25])
    woodbury = FoldIn(items, 0.1).solve(positions, weights, reg)
    monkeypatch.setattr(FoldIn, "_woodbury", FoldIn._direct)
    np.testing.assert_allclose(FoldIn(items, 0.1).solve(positions, weights, reg), woodbury, rtol=1e-5, atol=1e-6)


def test_padding_and_grouping_do_not_change_a_users_row() -> None:
    items, positions, weights, reg = problem([2, 5, 11, 40])
    fold = FoldIn(items, 0.2)
    together = fold.solve(positions, weights, reg)
    for k in range(len(positions)):
        alone = fold.solve([positions[k]], [weights[k]], reg[k : k + 1])
        np.testing.assert_allclose(together[k], alone[0], rtol=1e-6, atol=1e-7)


def test_empty_histories_and_vanishing_weights() -> None:
    items, positions, weights, reg = problem([0, 4, 0])
    weights[1][0] = 1e-40  # decayed to nothing: the same as absent
    got = FoldIn(items, 0.2).solve(positions, weights, reg)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_array_equal(got[2], 0.0)
    without = FoldIn(items, 0.2).solve([positions[1][1:]], [weights[1][1:]], reg[1:2])
    np.testing.assert_allclose(got[1], without[0], rtol=1e-5, atol=1e-6)


def test_lengths_are_grouped_into_few_padded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    items, _, weights, reg = problem([1, 2, 3, 9, 10, 11, 12, 100])
    rng = np.random.default_rng(4)
    positions = [rng.choice(len(items), len(w), replace=False) for w in weights]  # no repeats: width = length
    widths: list[int] = []
    original = FoldIn._padded

    def spy(
        self: FoldIn, flat_pos: np.ndarray, flat_w: np.ndarray, starts: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        vec, w = original(self, flat_pos, flat_w, starts, lengths)
        widths.append(w.shape[1])
        return vec, w

    monkeypatch.setattr(FoldIn, "_padded", spy)
    FoldIn(items, 0.2).solve(positions, weights, reg)
    assert sorted(widths) == [3, 12, 100]  # buckets <=4, 9-16, 65-128: padded to their longest


def test_unit_max_scales_each_history_alone() -> None:
    items, positions, weights, reg = problem([3, 20])
    scaled = [w / w.max() for w in weights]
    fold = FoldIn(items, 0.2)
    np.testing.assert_allclose(
        fold.solve(positions, [w * 7.0 for w in weights], reg, unit_max=True),
        fold.solve(positions, scaled, reg),
        rtol=1e-6,
        atol=1e-7,
    )


def test_a_repeated_item_counts_once_with_its_weights_summed() -> None:
    items, _, _, reg = problem([1])
    fold = FoldIn(items, 0.2)
    repeated = fold.solve([np.array([5, 9, 5, 5])], [np.array([0.5, 1.0, 0.25, 0.25])], reg)
    merged = fold.solve([np.array([5, 9])], [np.array([1.0, 1.0])], reg)
    np.testing.assert_allclose(repeated, merged, rtol=1e-6, atol=1e-7)
    want = exact(items, 0.2, [np.array([5, 9, 5, 5])], [np.array([0.5, 1.0, 0.25, 0.25], np.float32)], reg)
    np.testing.assert_allclose(repeated, want, rtol=2e-4, atol=2e-5)
