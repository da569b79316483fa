"""The model search: coordinate ascent within a budget (pure logic), and the train role searching its own data
in Redis, storing the winner, fine-tuning and publishing with it, and showing it in metrics and
``recd model list``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.ingest.store import RedisStore
from daemon.runtime.app import build_trainer
from daemon.runtime.cli import main
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.settings import Settings
from daemon.train.scheduler import TrainRole
from daemon.train.search import Setting, space_of
from schemas.events import InteractionEvent
from schemas.records import ModelChoice
from tests.conftest import RedisTarget, make_settings
from tests.planted import planted
from trainer.evaluation.search import Space, search
from trainer.models.base import EmbeddingModel
from trainer.models.registry import PRESETS, build_preset, search_grid, typed_overrides
from trainer.snapshot import read_manifest


class Clock:
    """A clock each trial advances by the trial's cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bowl(clock: Clock, cost: float = 1.0) -> Any:
    """A score peaking at dim 2048, reg 1 (dim beyond the grid below), each call costing ``cost`` seconds."""

    def score(preset: str, params: dict[str, Any]) -> float:
        clock.now += cost
        return -abs(params["dim"] - 2048) / 1024 - abs(params["reg"] - 1.0) - (preset == "other")

    return score


GRID = {"dim": [64, 128, 256], "reg": [0.5, 1.0, 3.0]}


def test_the_search_scores_the_configured_setting_first_and_climbs_past_the_grid() -> None:
    clock = Clock()
    spaces = [Space("main", {"dim": 64, "reg": 3.0}, GRID), Space("other", {"dim": 64, "reg": 3.0}, GRID)]
    result = search(spaces, bowl(clock), 1000.0, clock=clock, bounds={})
    assert [(t.preset, t.params) for t in result.trials[:2]] == [("main", spaces[0].start), ("other", spaces[1].start)]
    best = result.best()
    assert (best.preset, best.params) == ("main", {"dim": 2048, "reg": 1.0}), result.trials
    assert not result.stopped_by_budget
    tried = [(t.preset, tuple(sorted(t.params.items()))) for t in result.trials]
    assert len(tried) == len(set(tried))  # no setting is fitted twice
    capped = search(spaces, bowl(Clock()), 1000.0, clock=Clock()).best()  # tuning.BOUNDS caps dims at 1024
    assert capped.params == {"dim": 1024, "reg": 1.0}


def test_a_setting_that_scores_nan_loses() -> None:
    def score(preset: str, params: dict[str, Any]) -> float:
        return float("nan") if params["reg"] == 0.5 else params["reg"]

    spaces = [Space("main", {"dim": 64, "reg": 1.0}, {"reg": [0.5, 1.0, 3.0]})]
    result = search(spaces, score, 100.0, bounds={"reg": (0.1, 3.0)})
    assert result.best().params == {"dim": 64, "reg": 3.0}
    assert [t.score for t in result.trials if t.params["reg"] == 0.5] == [float("-inf")]


def test_the_search_stops_before_a_trial_that_would_overrun_its_budget() -> None:
    clock = Clock()
    spaces = [Space("main", {"dim": 64, "reg": 3.0}, GRID)]
    result = search(spaces, bowl(clock, cost=2.0), 5.0, clock=clock)
    assert result.stopped_by_budget and len(result.trials) == 2 and clock.now <= 5.0  # 2 s each: a third overruns
    assert search(spaces, bowl(Clock(), cost=2.0), 0.5, clock=Clock()).trials[0].params == spaces[0].start


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_tells_its_settings_unfitted(preset: str) -> None:
    """The search reads where it starts, and the scheduler a warm start's shape, before any fit."""

    def build(name: str, overrides: Mapping[str, float]) -> EmbeddingModel:
        return build_preset(name, device="cpu", threads=1, **typed_overrides(overrides))

    model = build(preset, {"dim": 512.0})
    assert model.setting("dim") == 512 and model.setting("no_such_setting") is None
    assert all(model.setting(axis) is not None for axis in search_grid(preset))
    space = space_of(preset, Setting(preset, {"dim": 512.0}), build)
    assert space.start.get("dim") == 512.0 and "dim" not in space.grid  # fixed: kept, not searched


CLUSTERS, USERS = 200, 800
"""Four users per cluster of twelve items, six items each: ials's defaults (dim 64, unobserved weight 0.2)
recall about half of the held-out items, a far smaller unobserved weight about four in five."""
DEFAULTS = {"dim": 64, "unobserved": 0.2, "reg": 3.0}


@pytest.fixture
def search_settings(redis_target: RedisTarget, prefix: str, tmp_path: Path) -> Settings:
    base = make_settings(redis_target, "127.0.0.1:9", prefix, tmp_path)
    return base.replace(
        model_kind="ials",
        device="cpu",
        train_threads=1,
        train_min_events=1,
        search_interval_s=3600,
        search_budget_s=12,
        search_min_users=100,
    )


def ingest(settings: Settings, seed: int, n_users: int = USERS) -> None:
    data = planted(n_users=n_users, per_user=6, clusters=range(CLUSTERS), seed=seed)
    now = int(time.time() * 1000)
    start = now - len(data) * 1000
    events = [
        (InteractionEvent(f"e{seed}_{n}", data.user_ids[u], data.item_ids[i], "purchase", start + n * 1000), now)
        for n, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True))
    ]
    RedisStore(topology_of(settings), keys_of(settings), store_options(settings)).apply_events(events, now)


def published(role: TrainRole) -> dict[str, Any]:
    outcome = role.run_once()
    assert outcome.status == "published" and outcome.version, outcome
    manifest = read_manifest(role.store.path(outcome.version))
    return {"setting": manifest.setting, "config": manifest.config, "version": outcome.version}


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.integration
def test_the_train_role_searches_its_own_data_and_trains_with_the_winner(
    search_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest(search_settings, seed=0)
    metrics = Metrics(CollectorRegistry())
    role = build_trainer(search_settings, metrics)
    first = published(role)  # the first model is never delayed by a search
    assert first["setting"] == {"preset": "ials", "params": {}, "chosen_by": "settings"}
    assert {k: first["config"][k] for k in DEFAULTS} == DEFAULTS
    assert role.client.get(role.keys.model_choice) is None

    second = published(role)
    choice = ModelChoice.from_json(role.client.get(role.keys.model_choice))  # type: ignore[arg-type]
    assert choice.preset == "ials" and choice.params != DEFAULTS, choice
    assert choice.metrics["recall@20"] > choice.baseline["recall@20"] + 0.1, choice
    assert choice.trials >= 2 and choice.seconds < search_settings.search_budget_s + 30
    assert {k: second["config"][k] for k in DEFAULTS} == choice.params and second["setting"]["chosen_by"] == "search"
    assert second["setting"]["validation"]["recall@20"] == choice.metrics["recall@20"]
    assert sample(metrics, "recd_model_search_runs_total", outcome="chosen") == 1.0
    assert sample(metrics, "recd_model_search_quality", setting="chosen") == choice.metrics["recall@20"]
    assert sample(metrics, "recd_model_search_quality", setting="configured") == choice.baseline["recall@20"]

    ingest(search_settings, seed=1, n_users=100)  # new events inside the interval: no new search, same setting
    third = published(role)
    assert role.client.get(role.keys.model_choice) == choice.to_json().encode()
    assert {k: third["config"][k] for k in DEFAULTS} == choice.params
    assert sample(metrics, "recd_model_search_runs_total", outcome="chosen") == 1.0

    for name, value in _cli_environment(search_settings).items():
        monkeypatch.setenv(name, value)
    assert main(["model", "list"]) == 0
    listed = {m["version"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[third["version"]]["setting"]["params"] == choice.params
    assert listed[third["version"]]["current"] and listed[first["version"]]["setting"]["chosen_by"] == "settings"


@pytest.mark.integration
def test_a_fixed_setting_stays_fixed_and_a_choice_for_other_settings_is_ignored(search_settings: Settings) -> None:
    ingest(search_settings, seed=0)
    fixed = search_settings.replace(model_params={"dim": 32.0}, search_budget_s=4)
    role = build_trainer(fixed, Metrics(CollectorRegistry()))
    published(role)
    second = published(role)
    choice = ModelChoice.from_json(role.client.get(role.keys.model_choice))  # type: ignore[arg-type]
    assert choice.params["dim"] == 32.0 and second["config"]["dim"] == 32 and choice.trials >= 2
    other = build_trainer(search_settings.replace(model_params={"dim": 16.0}), Metrics(CollectorRegistry()))
    assert other.search.choice() is None and other.new_model().setting("dim") == 16


@pytest.mark.integration
@pytest.mark.single_redis  # one key read; the search itself is covered on both above
def test_a_choice_that_changes_the_models_shape_fits_from_scratch(search_settings: Settings) -> None:
    ingest(search_settings, seed=0)
    role = build_trainer(search_settings.replace(quality_tolerance=0.9), Metrics(CollectorRegistry()))
    first = published(role)  # the gate is tested elsewhere; here it lets the smaller model through
    stored = ModelChoice("ials", {**DEFAULTS, "dim": 24.0}, "recall@20", {"recall@20": 0.5}, {"recall@20": 0.4},
                         3, 1.0, int(time.time() * 1000), USERS)  # fmt: skip
    role.client.set(role.keys.model_choice, stored.to_json())
    second = published(role)  # a 24-dim model cannot warm-start from a 64-dim one
    assert second["config"]["dim"] == 24 and second["setting"]["chosen_by"] == "search"
    assert read_manifest(role.store.path(second["version"])).parent_version == first["version"]
    assert role.new_model().setting("dim") == 24
    off = build_trainer(search_settings.replace(search_interval_s=0), Metrics(CollectorRegistry()))
    assert off.search.choice() is None and off.new_model().setting("dim") == 64  # search off: configured


def _cli_environment(settings: Settings) -> dict[str, str]:
    return {
        "RECD_MODEL_DIR": settings.model_dir,
        "RECD_REDIS_URL": settings.redis_url,
        "RECD_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
        "RECD_REDIS_PREFIX": settings.redis_prefix,
        "RECD_REDIS_SHARDS": str(settings.redis_shards),
    }
