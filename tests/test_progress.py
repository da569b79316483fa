"""Progress of long steps: the rate and ETA arithmetic, the log lines, gauges and terminal bar; every preset's
epoch count announced before its fit; and a training run and index build reporting each step against the real
Redis."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from daemon.runtime.app import build_trainer
from daemon.runtime.metrics import Metrics
from daemon.runtime.progress import Progress
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import Settings
from tests.test_serving import World, _served, serving_world
from trainer.interactions import Interactions
from trainer.models import registry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _gauge(metrics: Metrics, name: str, step: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"step": step})


def test_progress_reports_rate_eta_gauges_and_a_bar(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "daemon.runtime.progress")
    metrics, clock, bar = Metrics(CollectorRegistry()), Clock(), io.StringIO()
    progress = Progress(metrics, "fit", 10, "epochs", bar, log_every_s=5.0, clock=clock)
    clock.now += 4.0
    progress.advance(2)  # 0.5 epochs/s: 8 left take 16 s
    assert _gauge(metrics, "recd_step_progress_ratio", "fit") == 0.2
    assert _gauge(metrics, "recd_step_eta_seconds", "fit") == pytest.approx(16.0)
    assert not caplog.records, "the first line waits for log_every_s"
    assert bar.getvalue().endswith("") and "[######" + "." * 24 + "] fit: 2/10 epochs (20%)" in bar.getvalue()
    clock.now += 2.0
    progress.advance(3)
    assert [r.getMessage() for r in caplog.records] == ["fit: 3/10 epochs (30%), 0.5 epochs/s, ~14s left"]
    clock.now += 200.0
    progress.finish()
    assert _gauge(metrics, "recd_step_progress_ratio", "fit") == 1.0
    assert _gauge(metrics, "recd_step_eta_seconds", "fit") == 0.0
    assert caplog.records[-1].getMessage() == "fit done in 3.4min"
    assert bar.getvalue().endswith("\n") and "fit: 10/10 epochs (100%)" in bar.getvalue()


def test_a_step_without_a_total_counts_and_ends_at_one() -> None:
    metrics, clock = Metrics(CollectorRegistry()), Clock()
    progress = Progress(metrics, "snapshot", None, "users", clock=clock)
    clock.now += 2.0
    progress.advance(5000)
    assert progress.describe() == "snapshot: 5,000 users, 2,500.0 users/s"
    assert _gauge(metrics, "recd_step_progress_ratio", "snapshot") == 0.0 and progress.eta_s() is None
    progress.finish()
    assert _gauge(metrics, "recd_step_progress_ratio", "snapshot") == 1.0


def _data() -> Interactions:
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(40) for _ in range(8)]
    items = [f"i{int(i)}" for i in rng.integers(0, 30, len(users))]
    return Interactions.from_ids(users, items, ts=list(range(len(users))))


@pytest.mark.parametrize("name", ["ials", "item2vec", "mf_bpr", "ncf", "autoencoder", "multvae", "deepwalk"])
def test_every_epoch_counting_preset_runs_the_epochs_it_announces(name: str) -> None:
    slower = {"lr": 0.005} if registry.kind_of(name) in ("item2vec", "deepwalk") else {}  # 40 users: small steps
    model = registry.build_preset(name, seed=0, device="cpu", threads=1, dim=8, **slower)
    for warm in (False, True):
        seen: list[int] = []
        planned = model.planned_epochs(warm)
        model.fit(_data(), warm_from=model if warm else None, on_epoch=lambda epoch, _loss: seen.append(epoch))  # noqa: B023
        assert planned is not None and seen == list(range(planned)), (warm, planned, seen)


@pytest.fixture
def world(settings: Settings, rclient: RedisClient) -> Iterator[World]:
    with serving_world(settings, rclient) as w:
        yield w


@pytest.mark.integration
def test_a_training_run_and_an_index_build_report_each_step(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "daemon.runtime.progress")
    terminal = io.StringIO()
    trainer = build_trainer(world.settings, world.metrics, terminal)
    for run in range(2):  # the second snapshot counts against the users the first model saw
        assert trainer.run_once().status == "published"
        for step in ("snapshot", "fit", "evaluate"):
            assert _gauge(world.metrics, "recd_step_progress_ratio", step) == 1.0, (run, step)
    users = len({e["user_id"] for e in world.events})
    assert re.search(rf"snapshot: {users},?\d*/{users} users \(100%\)", terminal.getvalue()), terminal.getvalue()
    epochs = trainer.new_model().planned_epochs(True)
    assert f"fit: {epochs}/{epochs} epochs (100%)" in terminal.getvalue()
    done = {r.getMessage().split(" done in ")[0] for r in caplog.records if " done in " in r.getMessage()}
    assert done == {"snapshot", "fit", "evaluate"}
    world.pump(lambda: _served(world))
    assert _gauge(world.metrics, "recd_step_progress_ratio", "index_build") == 1.0
