"""Tune one recd preset on a validation split inside train, then score the pick on the test split.

    .venv/bin/python -m bench.tune --dataset selfrec-amazon-beauty --preset ials \\
        --grid dim=64,128 --grid unobserved=0.02,0.06,0.2

The same protocol ``bench.quality`` gives the ALS/BPR/gensim baselines
(``trainer.evaluation.tuning.tune``: validation Recall@20 inside train, the test
split never looked at while choosing), so a tuned preset and a tuned
baseline are compared on equal terms. A preset that takes item attributes
(``side_info``) gets the dataset's, aligned to train, as ``recd evaluate``
gives them. Each trial's validation recall and fit
seconds go to stdout; the LAST line is one JSON object with the grid, the
trials, the chosen parameters and the chosen model's test figures.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.quality import dataset_path
from trainer.datasets import load_dataset
from trainer.evaluation.report import attribute_loader
from trainer.evaluation.scoring import Scorer, evaluate
from trainer.evaluation.splits import protocol_split
from trainer.evaluation.tuning import BOUNDS, EXTRA_FITS, preset_maker, tune
from trainer.fit import resolve_device
from trainer.interactions import Interactions
from trainer.models import registry


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """``["dim=64,128", "unobserved=0.02,0.2"]`` -> {"dim": [64, 128], "unobserved": [0.02, 0.2]}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid wants NAME=V1,V2,...; got {spec!r}")
        grid[name] = [json.loads(v) for v in values.split(",")]
    return grid


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--preset", default="ials", help=f"one of {sorted(registry.PRESETS)}")
    p.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,... (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", help="the dataset's file format (default: detect)")
    p.add_argument(
        "--extend",
        type=int,
        default=EXTRA_FITS,
        help=f"fits allowed past the grid's edges while the best sits at one (default {EXTRA_FITS}; 0: the grid)",
    )
    args = p.parse_args(argv)
    grid = parse_grid(args.grid)
    data = load_dataset(dataset_path(args.dataset), fmt=args.format)
    train, test, protocol = protocol_split(data, args.seed)
    print(f"{data.name}: {protocol}; preset {args.preset}; device {resolve_device(args.device)}", flush=True)

    attributes = attribute_loader(dataset_path(args.dataset), train)  # for a preset that takes them (side_info)
    fit = preset_maker(args.preset, args.seed, attributes=attributes, device=args.device, threads=args.threads)

    def make(part: Interactions, params: dict[str, Any]) -> Scorer:
        started = time.perf_counter()
        scorer = fit(part, params)
        print(f"  fitted {params} in {time.perf_counter() - started:.1f}s", flush=True)
        return scorer

    best, trials = tune(make, train, grid, seed=args.seed, valid=data.valid, extend=args.extend, bounds=BOUNDS)
    for params, recall in trials:
        print(f"  validation recall@20 {recall:.4f}  {params}", flush=True)
    scorer = make(train, best)
    figures = evaluate(scorer, train, test, ks=(10, 20, 40), seed=args.seed)
    return {
        "dataset": data.name,
        "preset": args.preset,
        "grid": grid,
        "device": str(resolve_device(args.device)),
        "trials": [{"params": t, "validation_recall@20": round(r, 5)} for t, r in trials],
        "chosen": best,
        "test": {
            k: round(float(figures[k]), 5)
            for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@40", "ndcg@40", "coverage", "tail_share")
        },
    }


if __name__ == "__main__":
    print(json.dumps(main()))
