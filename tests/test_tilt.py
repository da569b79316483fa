"""A tail-favouring preset keeps its promise where it is trained: the daemon chooses ``ials_tail``'s tilt at
every fit, the strongest that keeps the held-out recall within ``TAIL_RECALL_FLOOR`` of the untilted model's."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_trainer
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.settings import Settings
from daemon.train import scheduler
from schemas.events import InteractionEvent
from tests.conftest import RedisTarget, make_settings
from tests.planted import planted
from trainer.models import registry
from trainer.models.ials import ImplicitALS
from trainer.snapshot import load_snapshot
from trainer.tilt import Calibration, Tilted, calibrate_tilt


class Dial:
    """A model whose held-out recall falls linearly with its tilt."""

    def __init__(self) -> None:
        self.weight = 0.3

    def tilt(self) -> float:
        return self.weight

    def set_tilt(self, weight: float) -> None:
        self.weight = weight

    def score(self) -> Mapping[str, float]:
        return {"recall@20": 0.5 - self.weight, "ndcg@20": 0.2}


def test_the_strongest_tilt_within_the_floor_is_chosen() -> None:
    dial = Dial()
    assert isinstance(dial, Tilted)
    found = calibrate_tilt(dial, dial.score, [0.01, 0.1, 0.02, 100.0], 0.95)  # floor 0.475: tilts <= 0.025
    assert (found.weight, dial.weight) == (0.02, 0.02)
    assert found.untilted == 0.5 and found.chosen == pytest.approx(0.48) and found.metrics["ndcg@20"] == 0.2
    none = calibrate_tilt(dial, dial.score, [0.1, 0.2], 0.95)
    assert (none.weight, dial.weight, none.chosen) == (0.0, 0.0, 0.5)  # untilted: nothing kept the floor
    with pytest.raises(ValueError, match="floor"):
        calibrate_tilt(dial, dial.score, [0.1], 1.5)


@pytest.fixture
def tail_settings(redis_target: RedisTarget, prefix: str, tmp_path: Path) -> Settings:
    """``ials_tail`` trained by the train role on planted events written straight into ingest's store."""
    settings = make_settings(redis_target, "127.0.0.1:9", prefix, tmp_path).replace(
        model_kind="ials_tail", model_params={"dim": 8, "epochs": 4}, device="cpu", train_threads=1, train_min_events=1
    )
    data = planted(n_users=200, per_user=6)
    now = int(time.time() * 1000)
    events = [
        (InteractionEvent(f"e{n}", data.user_ids[u], data.item_ids[i], "purchase", now - 10**6 + n), now)
        for n, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True))
    ]
    RedisStore(topology_of(settings), keys_of(settings), store_options(settings)).apply_events(events, now)
    return settings


def train(settings: Settings) -> tuple[ImplicitALS, list[Calibration]]:
    """One run of the train role: the published model and the tilt choices made."""
    found: list[Calibration] = []

    def recorded(model: Tilted, score: Callable[[], Mapping[str, float]], *rest: Any) -> Calibration:
        found.append(calibrate_tilt(model, score, *rest))
        return found[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scheduler, "calibrate_tilt", recorded)
        role = build_trainer(settings, Metrics(CollectorRegistry()))
        outcome = role.run_once()
    assert outcome.status == "published" and outcome.version is not None, outcome
    model, manifest = load_snapshot(role.store.path(outcome.version))
    assert isinstance(model, ImplicitALS)
    if found:
        assert manifest.metrics["recall@20"] == pytest.approx(found[-1].chosen)  # the gate saw the chosen tilt
    return model, found


@pytest.mark.integration
def test_the_daemon_chooses_ials_tails_tilt_at_every_fit(
    tail_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.TAIL_SWEEPS, "ials_tail", ("ials", "tail_weight", [0.005, 0.05, 100.0]))
    model, (found,) = train(tail_settings)
    assert found.weight in (0.0, 0.005, 0.05)  # 100 ranks by unpopularity alone: far below the floor
    assert model.tilt() == found.weight and found.chosen >= registry.TAIL_RECALL_FLOOR * found.untilted
    assert found.untilted > 0.3  # the planted clusters are learnt: the floor means something


@pytest.mark.integration
def test_a_tilt_set_in_the_model_params_is_kept(tail_settings: Settings) -> None:
    settings = tail_settings.replace(model_params={"dim": 8, "epochs": 4, "tail_weight": 0.07})
    model, found = train(settings)
    assert found == [] and model.tilt() == 0.07
