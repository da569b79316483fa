"""Roles, their loops, signals and shutdown.

Each role is an object with ``step()`` and ``shutdown()``. ``Service.run`` gives
every role its own thread running ``while not stop: step()`` and always ending
in ``shutdown()``. A step that raises one of the role's *transient* errors (a
Redis outage, say) is retried with backoff, counted, and the loop goes on; any
other error stops the service. Signal handlers only set the stop flag; a
second signal exits at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

# Young-generation collections once per this many new container objects (Python's default: 700). A
# 1,024-user serving step's lists and dicts live until the step ends, so at 700 the collector ran ~12
# times a step and took ~3% of serving (bench/serve.py, the rest frozen); at 50,000 it never ran there.
GC_YOUNG_OBJECTS = 50_000

log = logging.getLogger(__name__)


def backoff_delays(first: float = 0.1, cap: float = 5.0) -> Iterator[float]:
    """Waits between retries: ``first``, doubling up to ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


class Role(Protocol):
    def step(self) -> int:
        """Do one unit of work; return how much (0 = idle)."""

    def shutdown(self) -> None:
        """Finish what is in hand and release resources."""


@dataclass
class RoleLoop:
    """One role, its thread and its heartbeat (for /healthz)."""

    name: str
    role: Role
    idle_wait_s: float = 0.0
    transient: tuple[type[Exception], ...] = ()  # errors a step is retried after (with backoff)
    on_retry: Callable[[Exception], None] | None = None  # told of each such error (metrics)
    last_step: float = field(default_factory=time.monotonic)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def run(self, stop: threading.Event) -> None:
        delays: Iterator[float] | None = None
        try:
            while not stop.is_set():
                try:
                    worked = self.role.step()
                except self.transient as exc:
                    delays = delays or backoff_delays()
                    delay = next(delays)
                    log.warning("role %s: %s; retrying in %.1fs", self.name, exc, delay)
                    if self.on_retry is not None:
                        self.on_retry(exc)
                    stop.wait(delay)
                    continue
                delays = None
                self.last_step = time.monotonic()
                if not worked and self.idle_wait_s:
                    stop.wait(self.idle_wait_s)
        except BaseException as exc:
            self.error = exc
            log.exception("role %s crashed; stopping the service", self.name)
            stop.set()
        finally:
            try:
                self.role.shutdown()
            except Exception:
                log.exception("role %s shutdown failed", self.name)
            log.info("role %s stopped", self.name)


class Service:
    """Runs roles until the stop flag is set, then shuts each down."""

    def __init__(self, stop: threading.Event | None = None, stall_s: float = 120.0) -> None:
        self.stop = stop or threading.Event()
        self.loops: list[RoleLoop] = []
        self.stall_s = stall_s
        self._signals = 0

    def add(
        self,
        name: str,
        role: Role,
        idle_wait_s: float = 0.0,
        transient: tuple[type[Exception], ...] = (),
        on_retry: Callable[[Exception], None] | None = None,
    ) -> None:
        """Run ``role``; a step raising one of ``transient`` is retried with backoff (``on_retry`` is told)."""
        self.loops.append(RoleLoop(name, role, idle_wait_s, transient, on_retry))

    def liveness(self) -> tuple[bool, str]:
        """Alive while no role crashed and each stepped within ``stall_s`` seconds."""
        now = time.monotonic()
        bad = [f"{lp.name} crashed" for lp in self.loops if lp.error is not None]
        bad += [f"{lp.name} stalled" for lp in self.loops if lp.error is None and now - lp.last_step > self.stall_s]
        return (not bad, "; ".join(bad) or "all roles stepping")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(128 + signum)  # second signal: leave now
        self.stop.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def run(self, until: Callable[[], bool] | None = None, poll_s: float = 0.2) -> int:
        """Start every role's thread; wait for stop (or ``until()``); join. Returns an exit code."""
        # What exists now (imports, clients, config: ~200k objects) lives as long as the process. Frozen,
        # the collector's full passes skip it: unfrozen, each took ~145 ms of a serving thread here.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
        for lp in self.loops:
            lp.thread = threading.Thread(target=lp.run, args=(self.stop,), name=f"recd-{lp.name}")
            lp.thread.start()
        try:
            while not self.stop.is_set():
                if until is not None and until():
                    break
                self.stop.wait(poll_s)
        finally:
            self.stop.set()
            for lp in self.loops:
                if lp.thread is not None:
                    lp.thread.join()
        return 1 if any(lp.error is not None for lp in self.loops) else 0
