"""Choosing a tail-favouring model's tilt where it is trained: the strongest tilt whose held-out recall stays
within a floor of the untilted model's.

A tilt (``ials_tail``'s ``tail_weight``: a popularity penalty column in the index) changes serving only, so
it is chosen after the fit by scoring the same fitted model at each candidate. A fixed default tilt cannot keep
that promise on every catalogue (on one sparse set the default kept 55% of the untilted recall@20), so the
trainer chooses it at every fit (``daemon/train/scheduler.py``), as ``trainer.evaluation.tuning.tune_preset``
does offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

METRIC = "recall@20"


@runtime_checkable
class Tilted(Protocol):
    """A model whose serving vectors carry a popularity tilt that can change after the fit."""

    def tilt(self) -> float: ...

    def set_tilt(self, weight: float) -> None: ...


@dataclass(frozen=True)
class Calibration:
    weight: float  # the tilt chosen (0: none of the candidates kept the floor)
    untilted: float  # the held-out METRIC at tilt 0
    chosen: float  # ... and at the chosen tilt
    metrics: Mapping[str, float]  # every held-out figure at the chosen tilt


def calibrate_tilt(
    model: Tilted, score: Callable[[], Mapping[str, float]], candidates: Sequence[float], floor: float
) -> Calibration:
    """Set ``model``'s tilt to the largest of ``candidates`` whose ``score()[METRIC]`` is at least ``floor``
    times the untilted one's (0 when none is); ``score`` measures the model as it is tilted now."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the recall floor must be in (0, 1], got {floor!r}")
    model.set_tilt(0.0)
    reference = score()
    untilted = float(reference[METRIC])
    for weight in sorted({float(c) for c in candidates if c > 0}, reverse=True):
        model.set_tilt(weight)
        metrics = score()
        if float(metrics[METRIC]) >= floor * untilted:
            return Calibration(weight, untilted, float(metrics[METRIC]), metrics)
    model.set_tilt(0.0)
    return Calibration(0.0, untilted, untilted, reference)
