"""The role loop: steps until stopped, always ends in shutdown, a crash stops every role."""

from __future__ import annotations

import gc
import threading

from daemon.runtime.service import GC_YOUNG_OBJECTS, Service


class Counting:
    def __init__(self, crash_at: int = -1) -> None:
        self.steps = 0
        self.shut = 0
        self.crash_at = crash_at

    def step(self) -> int:
        self.steps += 1
        if self.steps == self.crash_at:
            raise RuntimeError("boom")
        return 1

    def shutdown(self) -> None:
        self.shut += 1


def test_roles_step_until_told_and_always_shut_down() -> None:
    service, a, b = Service(), Counting(), Counting()
    service.add("a", a)
    service.add("b", b)
    assert service.run(until=lambda: a.steps > 50 and b.steps > 50, poll_s=0.01) == 0
    assert (a.shut, b.shut) == (1, 1)
    assert service.liveness() == (True, "all roles stepping")


def test_a_crashing_role_stops_the_others_and_the_exit_code_says_so() -> None:
    service, ok, bad = Service(), Counting(), Counting(crash_at=5)
    service.add("ok", ok)
    service.add("bad", bad)
    assert service.run(poll_s=0.01) == 1
    assert (ok.shut, bad.shut) == (1, 1)
    alive, why = service.liveness()
    assert not alive and "bad crashed" in why


def test_what_exists_at_start_is_frozen_out_of_collections_and_young_ones_are_rarer() -> None:
    gc.unfreeze()
    before = gc.get_threshold()  # another Service in this process may have raised it already
    gc.set_threshold(700, 10, 10)  # Python's default
    stop = threading.Event()
    stop.set()
    try:
        Service(stop).run()
        assert gc.get_freeze_count() > 10_000  # the interpreter, pytest, the modules imported so far
        assert gc.get_threshold() == (GC_YOUNG_OBJECTS, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class Blip(Exception):
    """Stands in for a transient outage (the serve role names Redis's connection errors)."""


class Flaky(Counting):
    def __init__(self, blips: set[int]) -> None:
        super().__init__()
        self.blips = blips

    def step(self) -> int:
        self.steps += 1
        if self.steps in self.blips:
            raise Blip(f"outage at step {self.steps}")
        return 1


def test_a_transient_error_is_retried_with_backoff_and_counted_not_fatal() -> None:
    service, flaky, told = Service(), Flaky({2, 3}), []
    service.add("flaky", flaky, transient=(Blip,), on_retry=told.append)
    assert service.run(until=lambda: flaky.steps > 20, poll_s=0.01) == 0
    assert [str(e) for e in told] == ["outage at step 2", "outage at step 3"]
    assert flaky.shut == 1 and service.liveness()[0]


def test_an_error_not_named_transient_still_stops_the_service() -> None:
    service, flaky = Service(), Flaky({2})
    service.add("flaky", flaky, transient=(KeyError,))
    assert service.run(poll_s=0.01) == 1
    assert flaky.steps == 2 and flaky.shut == 1
