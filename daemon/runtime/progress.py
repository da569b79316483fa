"""Progress of long steps (a training run's snapshot, fit and evaluation; an index build): logged with rate
and ETA, exported as gauges, drawn as a bar on a terminal.

``Progress(metrics, step, total, unit)`` is one step; ``advance(done)`` reports the units done so far. The step
logs at most every ``log_every_s`` (and when it ends), sets ``recd_step_progress_ratio{step}`` and
``recd_step_eta_seconds{step}``, and, given a terminal, redraws one line on it. A total that is not known
(``None``) still logs the count and the rate; the ratio then stays 0 until the step ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

from daemon.runtime.metrics import Metrics

log = logging.getLogger(__name__)

BAR_WIDTH = 30


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


class Progress:
    """One long step: its units done, rate and ETA, reported to the log, the gauges and a terminal."""

    def __init__(
        self,
        metrics: Metrics,
        step: str,
        total: int | None,
        unit: str,
        terminal: TextIO | None = None,
        log_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics, self.step, self.total, self.unit = metrics, step, total, unit
        self.terminal, self.log_every_s, self.clock = terminal, log_every_s, clock
        self.started = self._logged = clock()
        self.done = 0
        metrics.step_progress.labels(step).set(0)
        metrics.step_eta.labels(step).set(0)

    def ratio(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def eta_s(self) -> float | None:
        elapsed = self.clock() - self.started
        if not self.total or not self.done or elapsed <= 0:
            return None
        return max(0.0, (self.total - self.done) * elapsed / self.done)

    def describe(self) -> str:
        elapsed = max(1e-9, self.clock() - self.started)
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self.ratio():.0f}%)" if self.total else ""
        eta = self.eta_s()
        left = f", ~{_duration(eta)} left" if eta is not None and self.done < (self.total or 0) else ""
        return f"{self.step}: {self.done:,}{of} {self.unit}{share}, {self.done / elapsed:,.1f} {self.unit}/s{left}"

    def advance(self, done: int) -> None:
        """``done`` units of the step are done (a count, not an increment)."""
        self.done = done
        self.metrics.step_progress.labels(self.step).set(self.ratio())
        self.metrics.step_eta.labels(self.step).set(self.eta_s() or 0.0)
        self._draw()
        if self.clock() - self._logged >= self.log_every_s:
            self._logged = self.clock()
            log.info("%s", self.describe())

    def finish(self) -> None:
        """The step is over: ratio 1, ETA 0, the bar's line ended, one log line with its duration."""
        if self.total is None:
            self.total = max(1, self.done)
        self.done = max(self.done, self.total)
        self.metrics.step_progress.labels(self.step).set(1.0)
        self.metrics.step_eta.labels(self.step).set(0.0)
        self._draw()
        if self.terminal is not None:
            self.terminal.write("\n")
            self.terminal.flush()
        log.info("%s done in %s", self.step, _duration(self.clock() - self.started))

    def _draw(self) -> None:
        if self.terminal is None:
            return
        filled = int(BAR_WIDTH * self.ratio())
        self.terminal.write(f"\r  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.describe():<70}")
        self.terminal.flush()
