"""Cold-item benchmark: models placing items they never saw an event of, against attribute baselines.

    .venv/bin/python -m bench.cold_items --dataset ml-100k-recbole --seed 0
    .venv/bin/python -m bench.cold_items --dataset movielens-dslabs --seed 1 --set id_dropout=0.5 --set epochs=20

The protocol is ``trainer.evaluation.cold_items``: a seeded 20% of the items
held out whole, side_info (given the dataset's item attributes,
``trainer.dataset_attributes``) and ials (at its defaults, ids only) trained on
the rest on the CPU, the cold items placed from their attributes as serving
places them (the attribute map; side_info also by its own attribute
embeddings: row ``side_info_embeddings``), each test user ranking the cold
items only. ``--set key=value`` overrides a side_info setting (repeatable;
values read as JSON, else as text). Progress goes to stderr, a table to stdout,
and the LAST stdout line is one JSON object::

    {"dataset": name, "seed": 0, "share": 0.2, "items": {"warm": .., "cold": ..}, "test_users": ..,
     "attributes": {"fields": .., "values": ..}, "settings": {..},
     "models": {"side_info": {"recall@20": .., "ndcg@20": .., "fit_seconds": ..}, "side_info_embeddings": {..},
                "ials": {..}, "attribute_popularity": {..}, ...},
     "ratio": {"vs_attribute_popularity": .., "vs_best_popularity": .., "ials_vs_best_popularity": ..}}
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.quality import dataset_path
from trainer.attribute_vectors import AttributeVectors
from trainer.attributes import ItemAttributes
from trainer.dataset_attributes import load_attributes
from trainer.datasets import load_dataset
from trainer.evaluation.cold_items import (
    BASELINES,
    COLD_SHARE,
    POPULARITY_BASELINES,
    ColdSplit,
    baseline_scores,
    model_scores,
    ranking_figures,
    split_cold_items,
)
from trainer.models.registry import build_preset

log = logging.getLogger("bench.cold_items")
PRESET = "side_info"
OTHER_MODELS = ("ials",)  # at its preset defaults: the daemon's default model


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=20", "sampler=uniform"]`` -> ``{"epochs": 20, "sampler": "uniform"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set wants key=value, not {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def model_figures(
    preset: str, split: ColdSplit, attributes: ItemAttributes, *, seed: int, threads: int, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Fit ``preset`` on the split's training events and rank the cold items placed by the attribute map (and,
    for side_info, by its own attribute embeddings): one row each."""
    started = time.perf_counter()
    model = build_preset(preset, seed=seed, device="cpu", threads=threads, **settings)
    if preset == PRESET:
        set_attributes = getattr(model, "set_attributes")  # noqa: B009  (SideInfo's, not EmbeddingModel's)
        set_attributes(attributes)
    model.fit(split.train)
    fit_s = round(time.perf_counter() - started, 1)
    placer = AttributeVectors.of(model, attributes)
    rows: dict[str, dict[str, Any]] = {
        preset: ranking_figures(model_scores(model, split, attributes, placer=placer), split)
    }
    rows[preset] |= {"fit_seconds": fit_s, "ridge": placer.mapping.ridge}
    if preset == PRESET:
        rows[f"{preset}_embeddings"] = ranking_figures(model_scores(model, split, attributes, own=True), split)
        weights = getattr(model, "field_weights")()  # noqa: B009
        rows[preset]["field_weights"] = {n: round(w, 3) for n, w in sorted(weights.items(), key=lambda kv: -kv[1])[:6]}
    return rows


def run(path: Path, *, seed: int, share: float, threads: int, settings: dict[str, Any]) -> dict[str, Any]:
    dataset = load_dataset(path)
    attributes = load_attributes(path)
    if attributes is None or not attributes.n_items:
        raise SystemExit(f"{path}: no item attributes this benchmark can read")
    split = split_cold_items(dataset.all(), share=share, seed=seed)
    log.info(
        "%s: %d warm, %d cold items, %d test users",
        dataset.name,
        split.train.n_items,
        len(split.cold_ids),
        len(split.users),
    )
    models = model_figures(PRESET, split, attributes, seed=seed, threads=threads, settings=settings)
    for preset in OTHER_MODELS:
        models |= model_figures(preset, split, attributes, seed=seed, threads=threads, settings={})
    for name in BASELINES:
        models[name] = ranking_figures(baseline_scores(name, split, attributes, seed), split)
    key = "recall@20"
    ours = models[PRESET][key]
    popular = max(models[name][key] for name in POPULARITY_BASELINES)
    return {
        "dataset": dataset.name,
        "seed": seed,
        "share": share,
        "items": {"warm": split.train.n_items, "cold": len(split.cold_ids)},
        "test_users": len(split.users),
        "attributes": {"fields": len(attributes.field_names), "values": len(attributes.value_names)},
        "settings": settings,
        "models": models,
        "ratio": {
            "vs_attribute_popularity": round(ours / max(models["attribute_popularity"][key], 1e-12), 3),
            "vs_best_popularity": round(ours / max(popular, 1e-12), 3),
            **{
                f"{name}_vs_best_popularity": round(models[name][key] / max(popular, 1e-12), 3) for name in OTHER_MODELS
            },
        },
    }


def table(models: dict[str, dict[str, Any]]) -> str:
    rows = [f"{'model':<26}{'recall@20':>11}{'ndcg@20':>10}", "-" * 47]
    rows += [f"{name:<26}{f['recall@20']:>11.4f}{f['ndcg@20']:>10.4f}" for name, f in models.items()]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset folder or file, or a folder name in shared/data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--share", type=float, default=COLD_SHARE, help="share of items held out whole")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the fit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a side_info setting")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    result = run(
        dataset_path(args.dataset),
        seed=args.seed,
        share=args.share,
        threads=args.threads,
        settings=parse_settings(args.set),
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\n{result['dataset']} (seed {args.seed}, {result['items']}, {result['test_users']} users)", flush=True)
    print(table(result["models"]), flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
