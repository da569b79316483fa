"""Item-pair AUC-ROC benchmark: seed 001's protocol (``trainer.evaluation.pairs``) on one dataset.

    .venv/bin/python -m bench.pairs --dataset /work/shared/data/ml-100k-recbole
    .venv/bin/python -m bench.pairs --dataset movielens-dslabs --models item2vec,gensim --seed 1

A seeded share of users is held out; every model is fitted on the other users'
events only and scores each held-out consecutive-positive pair, and as many
uniformly random item pairs, by the cosine of its item vectors. Models: any
preset (``trainer.models.registry``, built on the CPU; ``side_info`` given the dataset's item attributes,
``trainer.dataset_attributes``, where it has them), the baselines with item
vectors (``gensim``, ``als``, ``bpr``) and ``random`` (seeded Gaussian vectors:
the chance level). A model that fails is reported with its error and the others
still run. Progress goes to stderr, a table to stdout, and the LAST stdout line
is one JSON object::

    {"dataset": name, "seed": 0, "holdout_users": 0.2,
     "pairs": {"positives": .., "seen": .., "negatives": .., "dropped_unseen": ..},
     "models": {"<model>": {"auc": .., "auc_all": .., "auc_centered": .., "pairs": .., "seconds": ..}, ...}}

``auc`` is the seed's figure; ``auc_all`` adds the held-out pairs that are also training pairs; ``auc_centered``
scores the vectors less the trained items' mean row (see ``trainer.evaluation.pairs``). ``seconds`` is the fit plus the
scoring; ``pairs`` the held-out positives scored (as many negatives again).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import dataset_path
from trainer.attributes import ItemAttributes
from trainer.dataset_attributes import load_attributes
from trainer.datasets import load_dataset
from trainer.evaluation.pairs import HOLDOUT_USERS, PairTest, aligned_vectors, build_pair_test, pair_auc
from trainer.interactions import FloatArray, Interactions

DEFAULT_MODELS = ("mf_bpr", "item2vec", "gensim", "deepwalk", "node2vec", "side_info", "random")
BASELINES_WITH_VECTORS = ("gensim", "als", "bpr")
RANDOM_DIM = 64
"""Dimension of the ``random`` model's vectors."""

log = logging.getLogger("bench.pairs")


def item_vectors(
    name: str, train: Interactions, *, seed: int, threads: int, attributes: ItemAttributes | None = None
) -> FloatArray:
    """(train.n_items, d) item vectors of model ``name`` fitted on ``train``; a model that takes item
    ``attributes`` (``side_info``) is given them."""
    if name == "random":
        return np.random.default_rng(seed).standard_normal((train.n_items, RANDOM_DIM)).astype(np.float32)
    if name in BASELINES_WITH_VECTORS:
        from trainer.evaluation.baselines import FactorScorer, make_baseline

        scorer = make_baseline(name, train, seed=seed)
        if not isinstance(scorer, FactorScorer):
            raise TypeError(f"baseline {name!r} has no item vectors")
        return scorer.item_vectors()
    from trainer.models.registry import build_preset

    model = build_preset(name, seed=seed, device="cpu", threads=threads)
    set_attributes = getattr(model, "set_attributes", None)
    if attributes is not None and callable(set_attributes):
        set_attributes(attributes)
    model.fit(train)
    return aligned_vectors(model.similar_vectors(), model.item_ids, train.item_ids)


def evaluate_one(
    name: str, train: Interactions, test: PairTest, *, seed: int, threads: int, attributes: ItemAttributes | None = None
) -> dict[str, Any]:
    """One model's ``auc``, ``auc_all``, ``pairs`` and ``seconds``; ``{"error": ...}`` when it fails."""
    started = time.perf_counter()
    try:
        figures = pair_auc(item_vectors(name, train, seed=seed, threads=threads, attributes=attributes), test)
    except Exception as exc:  # one broken model must not sink the comparison
        log.error("%s failed:\n%s", name, traceback.format_exc())
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "auc": round(figures["auc"], 5),
        "auc_all": round(figures["auc_all"], 5),
        "auc_centered": round(figures["auc_centered"], 5),
        "pairs": len(test.positives),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run(path: Path, models: Sequence[str], *, seed: int, holdout: float, threads: int) -> dict[str, Any]:
    """Load ``path``, build the pair test once, evaluate every model on it."""
    dataset = load_dataset(path)
    attributes = load_attributes(path)  # side_info's item attributes, where the dataset has them
    train, test = build_pair_test(dataset.all(), frac=holdout, seed=seed)
    log.info("%s: %s", dataset.name, test.counts())
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        log.info("%s: fitting %s ...", dataset.name, name)
        results[name] = evaluate_one(name, train, test, seed=seed, threads=threads, attributes=attributes)
        log.info("%s: %s %s", dataset.name, name, results[name])
    return {"dataset": dataset.name, "seed": seed, "holdout_users": holdout, "pairs": test.counts(), "models": results}


def table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures as a fixed-width text table, one model a row."""
    head = f"{'model':<12}{'auc':>9}{'auc_all':>9}{'centered':>9}{'pairs':>9}{'seconds':>9}"
    rows = [head, "-" * len(head)]
    for name, f in models.items():
        if "error" in f:
            rows.append(f"{name:<12}  FAILED: {f['error']}")
        else:
            cells = f"{f['auc']:>9.4f}{f['auc_all']:>9.4f}{f['auc_centered']:>9.4f}{f['pairs']:>9}{f['seconds']:>9.1f}"
            rows.append(f"{name:<12}{cells}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset folder or file, or a folder name in shared/data")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated presets and baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=HOLDOUT_USERS, help="share of users held out")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the presets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    result = run(dataset_path(args.dataset), models, seed=args.seed, holdout=args.holdout, threads=args.threads)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"\n{result['dataset']} (seed {args.seed}, {args.holdout:.0%} of users held out, pairs {result['pairs']}, "
        f"{result['seconds']} s)\n{table(result['models'])}",
        flush=True,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
