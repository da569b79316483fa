"""daemon.train.gate: the quality gate between a candidate model and the served one."""

from __future__ import annotations

import math

import pytest

from daemon.train.gate import GateDecision, gate

M = "recall@20"


@pytest.mark.parametrize("current", [None, {}, {"ndcg@20": 0.3}])
def test_accepts_the_first_model(current: dict[str, float] | None) -> None:
    decision = gate({M: 0.1}, current, metric=M, tolerance=0.05)
    assert decision == GateDecision(True, decision.reason)
    assert "first model" in decision.reason and "0.1000" in decision.reason


def test_accepts_within_tolerance() -> None:
    assert gate({M: 0.196}, {M: 0.2}, metric=M, tolerance=0.05).accept  # floor 0.19
    assert gate({M: 0.19}, {M: 0.2}, metric=M, tolerance=0.05).accept  # exactly the floor
    assert gate({M: 0.25}, {M: 0.2}, metric=M, tolerance=0.0).accept
    assert gate({M: 0.2}, {M: 0.2}, metric=M, tolerance=0.0).accept


def test_refuses_a_worse_model() -> None:
    decision = gate({M: 0.18}, {M: 0.2}, metric=M, tolerance=0.05)
    assert not decision.accept
    assert "0.1800" in decision.reason and "0.2000" in decision.reason and "refused" in decision.reason
    assert not gate({M: 0.1999}, {M: 0.2}, metric=M, tolerance=0.0).accept


@pytest.mark.parametrize("candidate", [{M: math.nan}, {M: math.inf}, {}, {"ndcg@20": 0.5}])
def test_refuses_a_candidate_without_a_finite_figure(candidate: dict[str, float]) -> None:
    decision = gate(candidate, {M: 0.2}, metric=M, tolerance=0.05)
    assert not decision.accept and M in decision.reason
    assert not gate(candidate, None, metric=M, tolerance=0.05).accept


def test_a_nan_current_figure_does_not_block() -> None:
    decision = gate({M: 0.01}, {M: math.nan}, metric=M, tolerance=0.05)
    assert decision.accept and "nan" in decision.reason


@pytest.mark.parametrize("tolerance", [-0.01, 1.0, 1.5, math.nan])
def test_tolerance_must_be_in_0_1(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        gate({M: 0.2}, {M: 0.2}, metric=M, tolerance=tolerance)


def test_the_gate_scores_a_large_catalogue_in_smaller_chunks() -> None:
    from trainer.evaluation.scoring import GATE_CELLS, gate_chunk

    assert gate_chunk(1_000) == 512
    assert gate_chunk(280_000) * 280_000 <= GATE_CELLS < (gate_chunk(280_000) + 1) * 280_000
    assert gate_chunk(50_000_000) == 8
