"""A search over presets and their settings within a time budget: coordinate ascent on a validation score.

Every preset's configured setting is scored first (the baseline: the figure a
winner is compared with). Then, starting from the best preset's best setting,
one axis of its grid (``registry.TUNING_GRIDS``) at a time is swept with the
other axes held at their best, moving to the best value found (axes that make
a fit dearer, those ``BOUNDS`` names such as ``dim``, after the others, so a
small budget is spent on cheap fits first); while the best
value sits at an end of the values tried on an axis, the search steps past
that end (``tuning.beyond``, within ``tuning.BOUNDS``), so an optimum outside
the grid is reached. Rounds repeat until one moves nothing, then the next
preset is searched the same way. The search stops before a trial that would
overrun the budget (judged by the slowest trial so far); the baselines are
always scored. Deterministic: no random draws.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainer.evaluation.tuning import BOUNDS, Bounds, beyond

log = logging.getLogger(__name__)

Params = dict[str, Any]
MAX_ROUNDS = 3
"""Sweeps over a preset's axes at most (a round that moves nothing ends the preset's search sooner)."""


@dataclass(frozen=True)
class Space:
    """One preset's search: its configured setting and the grid its free axes are swept over."""

    preset: str
    start: Params  # the configured setting (fixed settings included)
    grid: Mapping[str, list[Any]]  # axes swept; axes the configuration fixes are left out


@dataclass(frozen=True)
class Trial:
    preset: str
    params: Params
    score: float
    seconds: float


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    stopped_by_budget: bool = False

    def best(self) -> Trial:
        """The highest-scoring trial; the earliest among equals (a baseline wins a tie)."""
        return max(self.trials, key=lambda t: t.score)

    def baseline(self, preset: str) -> Trial:
        return next(t for t in self.trials if t.preset == preset)


TrialKey = tuple[str, str]


def trial_key(preset: str, params: Mapping[str, Any]) -> TrialKey:
    """Identity of a candidate: the same preset and settings, in any order, are one trial."""
    return preset, repr(sorted(params.items()))


class _Budget:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock, self.started, self.slowest = seconds, clock, clock(), 0.0

    def allows_another(self) -> bool:
        return self.clock() - self.started + self.slowest <= self.seconds


def search(
    spaces: list[Space],
    score: Callable[[str, Params], float],
    budget_s: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    bounds: Bounds | None = None,
) -> SearchResult:
    """Search ``spaces`` by ``score(preset, params)`` (higher is better) within ``budget_s`` seconds."""
    result, budget = SearchResult(), _Budget(budget_s, clock)
    seen: dict[TrialKey, float] = {}

    def trial(preset: str, params: Params, forced: bool = False) -> float | None:
        key = trial_key(preset, params)
        if key in seen:
            return seen[key]
        if not forced and not budget.allows_another():
            result.stopped_by_budget = True
            return None
        started = clock()
        value = float(score(preset, params))
        value = value if math.isfinite(value) else -math.inf  # a diverged fit loses, and the search goes on
        seconds = clock() - started
        budget.slowest = max(budget.slowest, seconds)
        result.trials.append(Trial(preset, dict(params), value, seconds))
        seen[key] = value
        log.info("model search: %s %s -> %.4f (%.1fs)", preset, params, value, seconds)
        return value

    for space in spaces:
        trial(space.preset, space.start, forced=True)
    ranked = sorted(spaces, key=lambda s: -result.baseline(s.preset).score)
    for space in ranked:
        if not _ascend(space, trial, bounds if bounds is not None else BOUNDS) or result.stopped_by_budget:
            break
    return result


Probe = Callable[[str, Params], "float | None"]


def _ascend(space: Space, trial: Probe, bounds: Bounds) -> bool:
    """Coordinate ascent over ``space``; False once the budget stopped it."""
    best, best_score = dict(space.start), trial(space.preset, space.start)
    assert best_score is not None  # the baseline is scored already
    for _ in range(MAX_ROUNDS):
        moved = False
        for axis, values in sorted(space.grid.items(), key=lambda kv: kv[0] in bounds):  # costly axes last
            tried = sorted({*values, best[axis]} if axis in best else set(values))
            pending = list(tried)
            while pending:
                candidate = {**best, axis: pending.pop(0)}
                value = trial(space.preset, candidate)
                if value is None:
                    return False
                if value > best_score:
                    best, best_score, moved = candidate, value, True
                if pending or axis not in best:
                    continue
                if (step := beyond(tried, best[axis], bounds.get(axis))) is not None:
                    tried.append(step)
                    pending.append(step)
        if not moved:
            break
    return True
