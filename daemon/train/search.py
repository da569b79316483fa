"""The train role's model search: which preset and settings the scheduler fine-tunes with.

Once a model is published (the first model is never delayed) and then every
``interval_s``, a training run first searches: the latest positive of a seeded
sample of users is held out (another sample than the quality gate's), each
candidate is fitted on the rest and scored on those by the gate's metric
(``trainer.evaluation.search``: the configured setting, ``RECD_MODEL_KIND``
with ``RECD_MODEL_PARAMS``, first, then coordinate ascent over the grid of
each searched preset, within ``budget_s``). The winner is stored in Redis
(``model:choice``), exported as metrics, written into the manifest of every
model trained with it (``recd model list``), and used by every later run until
the next search; every publish still passes the quality gate. A setting fixed in
``RECD_MODEL_PARAMS`` stays fixed; a stored choice for a preset no longer
searched, or made under other fixed settings, is ignored, and so is every
stored choice while the search is off (``interval_s`` 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.redisconn import RedisClient
from daemon.train.gate import GATE_METRIC as METRIC
from schemas.records import ModelChoice
from trainer.evaluation.scoring import holdout_metrics
from trainer.evaluation.search import Params, Space, TrialKey, search, trial_key
from trainer.evaluation.splits import holdout_split, holdout_users
from trainer.interactions import Interactions
from trainer.models.base import EmbeddingModel
from trainer.models.registry import search_grid, tilt_candidates
from trainer.tilt import Tilted

log = logging.getLogger(__name__)

SEARCH_SEED = 1
"""Seed of the search's held-out sample (the quality gate's is 0)."""


@dataclass(frozen=True)
class SearchOptions:
    interval_s: int  # search at most this often; 0: never (train the configured setting)
    budget_s: float  # wall-clock seconds one search may spend fitting candidates
    presets: tuple[str, ...]  # presets searched besides the configured one
    min_users: int  # users with >= 2 positives the data needs before a search


@dataclass(frozen=True)
class Setting:
    preset: str
    params: Mapping[str, float]


Builder = Callable[[str, Mapping[str, float]], EmbeddingModel]
"""A fresh model of a preset with numeric overrides (the train role's, on its device and threads)."""


class ModelSearch:
    """``due`` / ``run`` for the train role; ``setting()`` is what the next fit uses."""

    def __init__(
        self,
        options: SearchOptions,
        configured: Setting,
        build: Builder,
        client: RedisClient,
        keys: Keys,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options, self.configured, self.build = options, configured, build
        self.client, self.keys, self.metrics, self.clock = client, keys, metrics, clock
        self.presets = tuple(dict.fromkeys((configured.preset, *options.presets)))

    def choice(self) -> ModelChoice | None:
        """The stored choice, if the search is on and the choice is one this configuration would make."""
        raw = self.client.get(self.keys.model_choice) if self.options.interval_s > 0 else None
        if raw is None:
            return None
        try:
            choice = ModelChoice.from_json(raw)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            log.warning("ignoring an unreadable %s: %s", self.keys.model_choice, exc)
            return None
        fixed = self.configured.params if choice.preset == self.configured.preset else {}
        if choice.preset not in self.presets or any(choice.params.get(k) != v for k, v in fixed.items()):
            return None
        return choice

    def setting(self) -> tuple[Setting, ModelChoice | None]:
        """The setting the next fit uses: the stored choice's, else the configured one."""
        choice = self.choice()
        if choice is None:
            return self.configured, None
        return Setting(choice.preset, choice.params), choice

    def due(self, data: Interactions) -> bool:
        if self.options.interval_s <= 0:
            return False
        choice = self.choice()
        if choice is not None and self.clock() * 1000 - choice.searched_at < self.options.interval_s * 1000:
            return False
        return len(holdout_users(data)) >= self.options.min_users

    def run(self, data: Interactions) -> ModelChoice:
        """Search on ``data``, store and export the winner; the figures of the stored choice."""
        try:
            spaces = [space_of(p, self.configured, self.build) for p in self.presets]
            choice = choose(data, spaces, self.configured.preset, self.build, self.options.budget_s, self.clock)
        except Exception:
            self.metrics.search_runs.labels("failed").inc()
            raise
        self.client.set(self.keys.model_choice, choice.to_json())
        self.metrics.search_runs.labels("chosen").inc()
        self.metrics.search_trials.set(choice.trials)
        self.metrics.search_seconds.set(choice.seconds)
        self.metrics.search_quality.labels("chosen").set(choice.metrics[choice.metric])
        self.metrics.search_quality.labels("configured").set(choice.baseline[choice.metric])
        log.info("model search: %s %s, held-out %s %.4f (configured %.4f), %d fits in %.0fs",
                 choice.preset, choice.params, choice.metric, choice.metrics[choice.metric],
                 choice.baseline[choice.metric], choice.trials, choice.seconds)  # fmt: skip
        return choice


def space_of(preset: str, configured: Setting, build: Builder) -> Space:
    """``preset``'s search: its grid without the settings ``configured`` fixes, from its configured setting."""
    fixed = dict(configured.params) if preset == configured.preset else {}
    grid = {axis: values for axis, values in search_grid(preset).items() if axis not in fixed}
    model = build(preset, fixed)
    start = {axis: value for axis in grid if (value := model.setting(axis)) is not None}
    return Space(preset, {**start, **fixed}, grid)


def choose(
    data: Interactions,
    spaces: list[Space],
    baseline_preset: str,
    build: Builder,
    budget_s: float,
    clock: Callable[[], float] = time.time,
) -> ModelChoice:
    """Search ``spaces`` on ``data``'s held-out latest events (``SEARCH_SEED``'s sample); the winner with its
    held-out figures and those of ``baseline_preset``'s configured setting."""
    started = time.perf_counter()
    train_part, _ = holdout_split(data, seed=SEARCH_SEED)
    figures: dict[TrialKey, dict[str, float]] = {}

    def score(preset: str, params: Params) -> float:
        model = build(preset, params)
        model.fit(train_part)
        if tilt_candidates(preset, dict(params)) and isinstance(model, Tilted):
            model.set_tilt(0.0)  # the scheduler tilts the winner within its recall floor
        metrics = holdout_metrics(model, data, seed=SEARCH_SEED)
        figures[trial_key(preset, params)] = metrics
        return metrics[METRIC]

    result = search(spaces, score, budget_s)
    best, baseline = result.best(), result.baseline(baseline_preset)
    return ModelChoice(
        preset=best.preset,
        params={k: float(v) for k, v in best.params.items()},
        metric=METRIC,
        metrics=figures[trial_key(best.preset, best.params)],
        baseline=figures[trial_key(baseline.preset, baseline.params)],
        trials=len(result.trials),
        seconds=round(time.perf_counter() - started, 3),
        searched_at=int(clock() * 1000),
        data_users=data.n_users,
    )
