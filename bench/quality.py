"""Quality benchmark: recd's model presets against baselines on one public dataset.

    .venv/bin/python -m bench.quality --dataset ml-100k-recbole
    .venv/bin/python -m bench.quality --dataset ../shared/data/selfrec-amazon-beauty --models item2vec,als --no-tune

Each model is fitted on the dataset's protocol split (given split, else
leave-latest-out, else a seeded random holdout; see ``trainer.evaluation.splits``) through
``trainer.evaluation.report.run_evaluation``; baselines (ALS, BPR, gensim) and recd
presets with a grid (``registry.TUNING_GRIDS``) are tuned on a validation split
inside train unless ``--no-tune``. ``side_info`` is given the dataset's item
attributes (``trainer.dataset_attributes``) and fits on ids alone, as plain
skip-gram, where the dataset has none: its row's ``attributes`` note says which,
under the table and in the JSON. A model that fails is
reported with its error and the others still run. Progress goes to stderr, a
table to stdout, and the LAST stdout line is one JSON object::

    {"dataset": name, "models": {"<model>": {"recall@10": .., "ndcg@10": .., "recall@20": .., "ndcg@20": ..,
     "recall@40": .., "ndcg@40": .., "hr@10_sampled": ..,
     "ndcg@10_sampled": .., "coverage": .., "tail_share": .., "auc": .., "fit_s": ..,
     "attributes": "3 fields, 134 values, 9064/9066 items", "field_weights": {..}}, ...}}

(``attributes`` and ``field_weights`` for a model that takes item attributes only.)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.evaluation.report import run_evaluation

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_MODELS = (
    "ials",
    "ials_tail",
    "item2vec",
    "item2vec_tail",
    "side_info",
    "mf_bpr",
    "ncf",
    "als",
    "bpr",
    "popularity",
    "gensim",
)
METRICS = (
    "recall@10",
    "ndcg@10",
    "recall@20",
    "ndcg@20",
    "recall@40",
    "ndcg@40",
    "hr@10_sampled",
    "ndcg@10_sampled",
    "coverage",
    "tail_share",
)
EXTRA = ("auc", "fit_s")  # reported when present
NOTES = ("attributes", "field_weights")  # a model that takes item attributes: what it got, what it learned

log = logging.getLogger("bench.quality")


def dataset_path(arg: str) -> Path:
    """``arg`` as given when it exists, else that folder of ``../shared/data``."""
    given = Path(arg)
    if given.exists():
        return given
    shared = DATA_ROOT / arg
    if shared.exists():
        return shared
    known = sorted(p.name for p in DATA_ROOT.iterdir()) if DATA_ROOT.is_dir() else []
    raise SystemExit(f"no dataset {arg!r} (neither a path nor a folder of {DATA_ROOT}: {known})")


def evaluate_one(path: Path, name: str, seed: int, tune: bool, fmt: str | None = None) -> tuple[dict[str, Any], str]:
    """(one model's figures, dataset name) from ``run_evaluation``; {"error": ...} when it fails."""
    try:
        result = run_evaluation(path, models=[name], seed=seed, tune=tune, with_auc=True, fmt=fmt)
    except Exception as exc:  # one broken model must not sink the whole comparison
        log.error("%s failed:\n%s", name, traceback.format_exc())
        return {"error": f"{type(exc).__name__}: {exc}"}, ""
    figures = result["models"][name]
    out: dict[str, Any] = {key: _num(figures[key]) for key in (*METRICS, *EXTRA) if key in figures}
    missing = [key for key in METRICS if key not in figures]
    if missing:
        out["error"] = f"run_evaluation returned no {missing}"
    for key in ("params", *NOTES):
        if key in figures:
            out[key] = figures[key]
    return out, str(result["dataset"])


def _num(value: Any) -> float | None:
    number = float(value)
    return round(number, 5) if math.isfinite(number) else None


def table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures as a fixed-width text table, one model a row."""
    columns = (*METRICS, *EXTRA)
    head = f"{'model':<16}" + "".join(f"{c:>16}" for c in columns)
    rows = [head, "-" * len(head)]
    for name, figures in models.items():
        if "error" in figures and not any(c in figures for c in columns):
            rows.append(f"{name:<16}  FAILED: {figures['error']}")
            continue
        cells = "".join(f"{_cell(figures.get(c)):>16}" for c in columns)
        rows.append(f"{name:<16}{cells}")
    notes = _notes(models)
    return "\n".join(rows + (["", *notes] if notes else []))


def _notes(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per model that takes item attributes: what it was given and its largest learned field weights."""
    lines = []
    for name, figures in models.items():
        if "attributes" in figures:
            weights = ", ".join(f"{field} {w:.2f}" for field, w in (figures.get("field_weights") or {}).items())
            lines.append(
                f"{name}: attributes {figures['attributes']}" + (f"; field weights {weights}" if weights else "")
            )
    return lines


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(path: Path, models: Sequence[str], seed: int, tune: bool, fmt: str | None = None) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    dataset = path.name
    for name in models:
        started = time.perf_counter()
        log.info("%s: fitting and evaluating %s ...", dataset, name)
        figures, named = evaluate_one(path, name, seed, tune, fmt)
        dataset = named or dataset
        results[name] = figures
        log.info("%s: %s done in %.1f s", dataset, name, time.perf_counter() - started)
    return {"dataset": dataset, "models": results}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"a dataset folder or file, or a folder name in {DATA_ROOT}")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated presets and baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--format", help="the dataset's file format: recbole, csv, triples or adjacency (default: detect)"
    )
    parser.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tune ALS/BPR/gensim and the presets with a grid on a validation split inside train (default: on)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    result = run(dataset_path(args.dataset), models, args.seed, args.tune, args.format)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"\n{result['dataset']} (seed {args.seed}, tune {'on' if args.tune else 'off'}, "
        f"{result['seconds']} s)\n{table(result['models'])}",
        flush=True,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
