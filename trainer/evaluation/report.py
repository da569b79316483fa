"""``recd evaluate``: load a dataset, fit each named model or baseline on its train split, evaluate it,
and optionally draw plots (the table is ``trainer.evaluation.table``).

A model that takes item attributes (side_info) is given the dataset's
(``trainer.dataset_attributes``), aligned to the train split's item ids; its
row says what it got in ``attributes`` (``tuning.NO_ATTRIBUTES`` where the
dataset has none and it fitted on ids alone) and its learned ``field_weights``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.attributes import ItemAttributes
from trainer.dataset_attributes import load_attributes
from trainer.datasets import Dataset, load_dataset
from trainer.evaluation.baselines import BASELINES, make_baseline, tune_baseline
from trainer.evaluation.scoring import EmbeddingScorer, Scorer, evaluate
from trainer.evaluation.splits import protocol_split
from trainer.evaluation.tuning import AttributeLoader, field_weights, give_attributes, tune_preset
from trainer.interactions import Interactions
from trainer.models.base import EmbeddingModel, FitReport

ModelFactory = Callable[[], EmbeddingModel]

log = logging.getLogger(__name__)


def run_evaluation(
    dataset_path: str | Path,
    models: Sequence[str] = ("item2vec", "als", "popularity"),
    k: int = 20,
    plots_dir: str | Path | None = None,
    seed: int = 0,
    *,
    tune: bool = False,
    with_auc: bool = True,
    factories: Mapping[str, ModelFactory] | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """Load a dataset, fit each named model on its train split and evaluate it (``recd evaluate``).

    Names are baselines (``popularity``, ``als``, ``bpr``, ``gensim``), keys of
    ``factories``, or presets of ``trainer.models.registry``. With ``tune``,
    ALS/BPR/gensim and the presets in ``registry.TUNING_GRIDS`` pick their
    parameters on a validation split inside train first. Returns a JSON-able
    dict: dataset, protocol, sizes and ``models`` -> metrics (Recall/NDCG @10, @20,
    @40 and @k) plus ``fit_s`` / ``eval_s``. A dataset's own ``valid`` split is the
    tuning split; ``fmt`` names the file format instead of detecting it. A model
    that takes item attributes gets the dataset's (see the module docstring).
    """
    data = load_dataset(dataset_path, fmt=fmt)
    train, test, protocol = protocol_split(data, seed)
    log.info("%s: %s, %d train rows, %d test rows", data.name, protocol, len(train), len(test))
    attributes = attribute_loader(dataset_path, train)
    results: dict[str, dict[str, Any]] = {}
    fitted: dict[str, EmbeddingModel] = {}
    curves: dict[str, FitReport] = {}  # model name -> its fit's report (loss curve)
    for name in models:
        results[name], model, curve = _fit_and_evaluate(
            name,
            train,
            test,
            k=k,
            seed=seed,
            tune=tune,
            with_auc=with_auc,
            factories=factories or {},
            valid=data.valid,
            attributes=attributes,
        )
        if model is not None and curve is not None:
            fitted[name], curves[name] = model, curve
    out = _summary(data.name, dataset_path, protocol, train, test, k)
    out["models"] = results
    if plots_dir is not None:
        out["plots"] = _plots(data, train, fitted, curves, Path(plots_dir))
    return out


def _fit_and_evaluate(
    name: str,
    train: Interactions,
    test: Interactions,
    *,
    k: int,
    seed: int,
    tune: bool,
    with_auc: bool,
    factories: Mapping[str, ModelFactory],
    valid: Interactions | None = None,
    attributes: AttributeLoader | None = None,
) -> tuple[dict[str, Any], EmbeddingModel | None, FitReport | None]:
    """Fit one named model on train and evaluate it: (its result row, the fitted embedding model and its fit report)."""
    started = time.perf_counter()
    scorer, extra = _fit_named(name, train, seed, tune, factories, valid, attributes)
    fit_s = time.perf_counter() - started
    model: EmbeddingModel | None = None
    curve: FitReport | None = None
    if isinstance(scorer, EmbeddingScorer):
        model, curve = scorer.model, extra.pop("report")  # _fit_named: every fitted model has one
    started = time.perf_counter()
    metrics = evaluate(scorer, train, test, ks=sorted({10, 20, 40, k}), seed=seed, with_auc=with_auc)
    row = {**metrics, "fit_s": round(fit_s, 3), "eval_s": round(time.perf_counter() - started, 3), **extra}
    log.info("%s: %s", name, {key: round(v, 4) for key, v in metrics.items()})
    return row, model, curve


def _summary(
    name: str, path: str | Path, protocol: str, train: Interactions, test: Interactions, k: int
) -> dict[str, Any]:
    """The result's header: dataset, protocol and split sizes (``models`` follows it)."""
    return {
        "dataset": name,
        "path": str(path),
        "protocol": protocol,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "n_train": len(train),
        "n_test": len(test),
        "k": k,
    }


def attribute_loader(path: str | Path, train: Interactions) -> AttributeLoader:
    """The dataset's item attributes aligned to ``train``'s item ids, read on the first call (None: it has none)."""

    @functools.cache
    def load() -> ItemAttributes | None:
        found = load_attributes(path)
        if found is None or not found.n_items:
            return None
        aligned = found.align(train.item_ids)
        log.info("%s: item attributes for %d of %d items", path, int((aligned.lengths() > 0).sum()), train.n_items)
        return aligned

    return load


def _fit_named(
    name: str,
    train: Interactions,
    seed: int,
    tune: bool,
    factories: Mapping[str, ModelFactory],
    valid: Interactions | None = None,
    attributes: AttributeLoader | None = None,
) -> tuple[Scorer, dict[str, Any]]:
    """(scorer, extra result fields) for one model name."""
    if name in factories or name not in BASELINES:
        tuned = tune_preset(name, train, seed, valid, attributes) if tune and name not in factories else {}
        model = factories[name]() if name in factories else _registry_model(name, seed, **tuned)
        note = give_attributes(model, attributes)
        report = model.fit(train)
        extra: dict[str, Any] = {"report": report, "device": report.device}
        if note is not None:
            extra["attributes"] = note
            extra["field_weights"] = field_weights(model)
        if tuned:
            extra["params"] = tuned
        return EmbeddingScorer(model, train, name=name), extra
    params: dict[str, Any] = {}
    if tune and name != "popularity":
        params, trials = tune_baseline(name, train, seed=seed, valid=valid)
        log.info("%s tuning: %s", name, trials)
    return make_baseline(name, train, seed=seed, **params), ({"params": params} if params else {})


def _registry_model(name: str, seed: int, **overrides: Any) -> EmbeddingModel:
    from trainer.models import registry

    try:
        return registry.build_preset(name, seed=seed, **overrides)
    except KeyError:
        known = sorted([*BASELINES, *registry.PRESETS])
        raise ValueError(f"unknown model {name!r}; choose from {known}") from None


def _plots(
    data: Dataset,
    train: Interactions,
    fitted: Mapping[str, EmbeddingModel],
    curves: Mapping[str, FitReport],
    root: Path,
) -> list[str]:
    from trainer.evaluation.plots import plot_embedding_map, plot_training_curves

    counts = train.positives().item_counts()
    popularity = {item: float(c) for item, c in zip(train.item_ids, counts.tolist(), strict=True)}
    paths = [
        plot_embedding_map(model, data.item_titles, popularity, root / f"{data.name}_{name}_map.png", name=name)
        for name, model in fitted.items()
    ]
    if curves:  # labelled by the name each model was asked for (two presets of one kind stay apart)
        paths.append(plot_training_curves(curves, root / f"{data.name}_training_curves.png"))
    return [str(p) for p in paths]
