"""The train role: when to fine-tune, the quality gate, publishing.

A run is due when ``train_min_events`` new events were applied since the last
run, or ``train_interval_s`` passed and any new event arrived (the first model
comes as soon as ``train_min_events`` events exist). One replica trains at a
time (a Redis lock). A model that learns from item attributes (``side_info``)
is given the catalogue's attributes of the snapshot's items, read with the
snapshot. The candidate warm-starts from the served model, is fitted
on the data minus a held-out latest event of a sample of users, scored on those,
(a tail-favouring preset, ``ials_tail``, first gets the strongest tilt whose held-out
recall stays within ``TAIL_RECALL_FLOOR`` of the untilted model's: trainer/tilt.py)
and published only if the gate accepts it against the served model's recorded
score. Publishing = snapshot folder, the store's CURRENT, then the Redis pointer
every serving replica watches. The preset and settings fitted are the model
search's choice when one is stored, else ``RECD_MODEL_KIND`` with
``RECD_MODEL_PARAMS``; a run searches first when the search is due
(daemon/train/search.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from daemon.runtime.history import weight_table
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.progress import Progress
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import ConfigError
from daemon.runtime.state import StateReader
from daemon.train.gate import GATE_METRIC, gate
from daemon.train.publish import publish
from daemon.train.search import ModelSearch, SearchOptions, Setting
from daemon.train.source import Snapshot, read_attributes, read_snapshot
from schemas.records import ModelChoice
from trainer.attributes import ItemAttributes
from trainer.evaluation.scoring import holdout_metrics
from trainer.evaluation.splits import holdout_split
from trainer.fit import TakesAttributes
from trainer.models.base import EmbeddingModel
from trainer.models.registry import TAIL_RECALL_FLOOR, build_preset, kind_of, tilt_candidates, typed_overrides
from trainer.snapshot import ModelStore, load_snapshot, read_manifest, save_snapshot
from trainer.tilt import METRIC, Tilted, calibrate_tilt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # published | refused | skipped | failed
    version: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class TrainOptions:
    model_dir: Path  # versioned snapshots
    model_kind: str  # the preset trained
    model_params: Mapping[str, float]  # numeric overrides of the preset
    device: str  # auto | cpu | cuda
    threads: int  # CPU threads for training
    interval_s: int  # fine-tune at least this often when new events arrived...
    min_events: int  # ...or as soon as this many did
    tolerance: float  # the gate: publish only if held-out recall >= current * (1 - tolerance)
    keep_versions: int  # snapshots kept for rollback
    weights: Mapping[str, float]  # by event type (history.event_weight)
    rating_threshold: float
    search: SearchOptions  # the model search (daemon/train/search.py)


class TrainRole:
    """``step()``: train when due; returns 1 after a run, 0 when idle."""

    def __init__(
        self,
        options: TrainOptions,
        topology: Topology,
        keys: Keys,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        terminal: TextIO | None = None,
    ) -> None:
        self.options = options
        self.terminal = terminal  # progress bars go here (``recd train`` on a terminal)
        self.topology = topology
        self.client = topology.client
        self.reader = StateReader(topology, keys)
        self.keys = keys
        self.metrics = metrics
        self.clock = clock
        self.store = ModelStore(options.model_dir)
        self.weights = weight_table(options.weights, options.rating_threshold)
        self.holder = uuid.uuid4().hex
        self._last_run = 0.0
        self._attributes: ItemAttributes | None = None  # the snapshot's, for every model that takes them
        configured = Setting(options.model_kind, options.model_params)
        self.search = ModelSearch(options.search, configured, self._build, self.client, keys, metrics, clock)
        # a bad RECD_MODEL_KIND / RECD_MODEL_PARAMS / RECD_SEARCH_PRESETS fails at start, not at the first fit
        self.takes_attributes = any(
            isinstance(self._build(p, options.model_params if p == options.model_kind else {}), TakesAttributes)
            for p in self.search.presets
        )

    def _build(self, preset: str, overrides: Mapping[str, float]) -> EmbeddingModel:
        """A fresh model of ``preset`` with numeric ``overrides``, given the snapshot's attributes if it takes
        them; ConfigError naming the settings when they cannot build one."""
        params = typed_overrides(overrides)
        try:
            model = build_preset(preset, device=self.options.device, threads=self.options.threads, **params)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"RECD_MODEL_KIND / RECD_MODEL_PARAMS / RECD_SEARCH_PRESETS: preset {preset!r} with {params}: {exc}"
            ) from None
        if isinstance(model, TakesAttributes) and self._attributes is not None:
            model.set_attributes(self._attributes)
        return model

    def new_model(self) -> EmbeddingModel:
        """A fresh, unfitted model of the setting the next run fits (the search's choice, else the configured)."""
        setting, _ = self.search.setting()
        return self._build(setting.preset, setting.params)

    def due(self) -> bool:
        applied = self.reader.totals()["applied"]
        seen = int(self.client.get(self.keys.train_watermark) or 0)  # type: ignore[arg-type]
        fresh = applied - seen
        if fresh <= 0:
            return False
        interval_over = self.clock() - self._last_run >= self.options.interval_s and seen > 0
        return fresh >= self.options.min_events or interval_over

    def step(self) -> int:
        if not self.due() or not self._lock():
            return 0
        try:
            outcome = self.run_once()
        finally:
            self.client.delete(self.keys.train_lock)
        self._last_run = self.clock()
        log.info("training run: %s %s %s", outcome.status, outcome.version or "", outcome.reason)
        return 1

    def _lock(self) -> bool:
        ttl_ms = max(60_000, self.options.interval_s * 2000) + int(self.options.search.budget_s * 1000)
        return bool(self.client.set(self.keys.train_lock, self.holder, nx=True, px=ttl_ms))

    def _current(self, preset: str) -> tuple[EmbeddingModel | None, dict[str, float], str | None]:
        version = self.store.current()
        if version is None:
            return None, {}, None
        model, manifest = load_snapshot(self.store.root / "versions" / version)
        if model.kind != kind_of(preset):
            return None, manifest.metrics, version  # another model kind: gate against it, start fresh
        return model, manifest.metrics, version

    def run_once(self) -> Outcome:
        started = time.perf_counter()
        try:
            snap = self._snapshot()
            if len(snap.data.positives()) < 2:
                self.metrics.train_runs.labels("skipped").inc()
                return Outcome("skipped", reason="no positive events yet")
            self._attributes = snap.attributes
            if self.store.current() is not None and self.search.due(snap.data):
                self._search(snap)
            outcome = self._train(snap, *self.search.setting())
        except Exception as exc:
            log.exception("training failed")
            self.metrics.train_runs.labels("failed").inc()
            self.metrics.errors.labels("train").inc()
            return Outcome("failed", reason=str(exc))
        self.metrics.train_seconds.observe(time.perf_counter() - started)
        self.metrics.train_runs.labels(outcome.status).inc()
        return outcome

    def _progress(self, step: str, total: int | None, unit: str) -> Progress:
        return Progress(self.metrics, step, total, unit, self.terminal)

    def _snapshot(self) -> Snapshot:
        """Every history from Redis, and for a model that takes them its items' catalogue attributes; progress
        counted against the users the current model saw."""
        version = self.store.current()
        seen = read_manifest(self.store.path(version)).data_watermark.get("users") if version else None
        progress = self._progress("snapshot", int(seen) if seen else None, "users")
        snap = read_snapshot(self.topology, self.keys, self.weights, on_progress=progress.advance)
        if self.takes_attributes:
            snap = replace(snap, attributes=read_attributes(self.topology, self.keys, snap.data.item_ids))
        progress.finish()
        return snap

    def _search(self, snap: Snapshot) -> None:
        """The model search, as a step; a failed search is logged and counted, and the run goes on with the
        setting it had."""
        progress = self._progress("search", None, "settings")
        try:
            self.search.run(snap.data)
        except ConfigError:
            raise
        except Exception:
            log.exception("model search failed; training with the current setting")
            self.metrics.errors.labels("train").inc()
        progress.finish()

    def _fit(
        self, model: EmbeddingModel, snap: Snapshot, current: EmbeddingModel | None, tilts: list[float]
    ) -> dict[str, float]:
        """Fit on all but the hold-out, then score on it; each a step with its progress."""
        train_part, _ = holdout_split(snap.data)
        progress = self._progress("fit", model.planned_epochs(current is not None), "epochs")
        report = model.fit(train_part, warm_from=current, on_epoch=lambda epoch, _loss: progress.advance(epoch + 1))
        progress.finish()
        self.metrics.train_speed.set(report.samples_per_s)
        if report.losses:
            self.metrics.train_loss.set(report.losses[-1])
        progress = self._progress("evaluate", None, "models")
        if tilts and isinstance(model, Tilted):
            scores = self._calibrate(model, snap, tilts)
        else:
            scores = holdout_metrics(model, snap.data)
        progress.finish()
        return scores

    def _calibrate(self, model: EmbeddingModel, snap: Snapshot, tilts: list[float]) -> dict[str, float]:
        """The strongest tilt among ``tilts`` that keeps the held-out recall within the floor of the
        untilted model's (trainer/tilt.py); the held-out figures at that tilt."""
        assert isinstance(model, Tilted)
        found = calibrate_tilt(model, lambda: holdout_metrics(model, snap.data), tilts, TAIL_RECALL_FLOOR)
        log.info("tilt %g: held-out %s %.4f, untilted %.4f (floor %g)",
                 found.weight, METRIC, found.chosen, found.untilted, TAIL_RECALL_FLOOR)  # fmt: skip
        return dict(found.metrics)

    def _train(self, snap: Snapshot, setting: Setting, choice: ModelChoice | None) -> Outcome:
        current, current_metrics, current_version = self._current(setting.preset)
        model = self._build(setting.preset, setting.params)
        if current is not None and (old := _shape(current)) != (new := _shape(model)):
            log.info("the setting changed the model's shape %s -> %s: fitting from scratch", old, new)
            current = None
        tilts = tilt_candidates(setting.preset, dict(setting.params))  # chosen at every fit
        scores = self._fit(model, snap, current, tilts)
        for name, value in scores.items():
            self.metrics.model_quality.labels(name).set(value)
        self.client.set(self.keys.train_watermark, snap.applied_events)
        decision = gate(scores, current_metrics or None, metric=GATE_METRIC, tolerance=self.options.tolerance)
        if not decision.accept:
            return Outcome("refused", reason=decision.reason)
        version = self.store.new_version(model.kind)
        save_snapshot(
            model,
            self.store.root / "versions" / version,
            version=version,
            data_watermark={
                "applied_events": snap.applied_events,
                "last_event_s": snap.last_event_s,
                "interactions": len(snap.data),
                "users": snap.data.n_users,
                **_described(snap),
            },
            metrics=scores,
            parent_version=current_version,
            setting=choice.as_setting() if choice else _configured(setting),
        )
        publish(self.client, self.keys, self.store, version)
        self.store.prune(self.options.keep_versions)
        return Outcome("published", version, decision.reason)

    def shutdown(self) -> None:
        """A run in progress finishes inside step(); nothing is held between steps."""


def _shape(model: EmbeddingModel) -> tuple[Any, ...]:
    """The settings that size a model's tables: a warm start needs the same ones."""
    return tuple(model.setting(name) for name in ("dim", "ideal_dim", "layers", "tied"))


def _configured(setting: Setting) -> dict[str, Any]:
    """What a manifest records of a model trained with the configured setting."""
    return {"preset": setting.preset, "params": dict(setting.params), "chosen_by": "settings"}


def _described(snap: Snapshot) -> dict[str, int]:
    """The snapshot's items that had catalogue attributes, where they were read (for the manifest)."""
    if snap.attributes is None:
        return {}
    return {"attributed_items": int((snap.attributes.lengths() > 0).sum())}
