"""The quality gate: publish a candidate model only if it is not worse than the served one.

``gate(candidate, current, metric=..., tolerance=t)`` accepts when there is no
usable current figure (first model), and otherwise iff
``candidate[metric] >= current[metric] * (1 - t)``. A candidate without a
finite figure for ``metric`` is always refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

GATE_METRIC = "recall@20"
"""The held-out figure the gate compares (and the model search ranks settings by)."""


@dataclass(frozen=True)
class GateDecision:
    accept: bool
    reason: str


def _figure(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    """``metrics[metric]`` as a float, or None when absent or not a number."""
    if not metrics or metric not in metrics:
        return None
    try:
        return float(metrics[metric])
    except (TypeError, ValueError):
        return None


def gate(
    candidate: Mapping[str, float], current: Mapping[str, float] | None, *, metric: str, tolerance: float
) -> GateDecision:
    """Decide whether ``candidate`` (held-out metrics) may replace the model scored ``current``."""
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    cand = _figure(candidate, metric)
    if cand is None or not math.isfinite(cand):
        shown = "missing" if cand is None else f"{cand}"
        return GateDecision(False, f"candidate {metric} is {shown}: refused")
    cur = _figure(current, metric)
    if cur is None or not math.isfinite(cur):
        why = "first model" if cur is None else f"current {metric} is {cur}"
        return GateDecision(True, f"{why}: candidate {metric} {cand:.4f} accepted")
    floor = cur * (1.0 - tolerance)
    figures = f"candidate {metric} {cand:.4f} vs current {cur:.4f} (floor {floor:.4f}, tolerance {tolerance:g})"
    if cand >= floor:
        return GateDecision(True, f"{figures}: accepted")
    return GateDecision(False, f"{figures}: refused")
