"""The daemon's model search on a dataset: what it chooses within its budget, and what that is worth on the test split.

    .venv/bin/python -m bench.search --dataset selfrec-amazon-beauty --budget 600

The train role's search (``daemon.train.search.choose``) runs on the
dataset's training split exactly as on the daemon's own data: the latest
positive of a seeded sample of users held out, the configured setting (the
preset's defaults with ``--params``) first, then coordinate ascent within
``--budget`` seconds. Then the configured setting and the winner are each fitted
on all of train and scored on the test split (full ranking, training items
masked). Progress goes to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from bench.quality import dataset_path
from daemon.train.search import Setting, choose, space_of
from trainer.datasets import load_dataset
from trainer.evaluation.scoring import EmbeddingScorer, evaluate
from trainer.evaluation.splits import protocol_split
from trainer.fit import resolve_device
from trainer.interactions import Interactions
from trainer.models import registry
from trainer.models.base import EmbeddingModel

SHOWN = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@40", "ndcg@40")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--preset", default="ials", help="the configured preset (RECD_MODEL_KIND)")
    p.add_argument("--params", default="", help="fixed settings (RECD_MODEL_PARAMS), e.g. 'dim=128'")
    p.add_argument("--presets", default="", help="presets searched besides it (RECD_SEARCH_PRESETS)")
    p.add_argument("--budget", type=float, default=600.0, help="seconds of fitting (RECD_SEARCH_BUDGET_S)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--format", help="the dataset's file format (default: detect)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = load_dataset(dataset_path(args.dataset), fmt=args.format)
    train, test, protocol = protocol_split(data)
    print(f"{data.name}: {protocol}; search on train's held-out latest events", flush=True)

    def build(preset: str, params: Mapping[str, float]) -> EmbeddingModel:
        given = registry.typed_overrides(params)
        return registry.build_preset(preset, device=args.device, threads=args.threads, **given)

    fixed = {k: float(v) for k, v in (kv.split("=") for kv in args.params.split(",") if kv)}
    configured = Setting(args.preset, fixed)
    presets = dict.fromkeys([args.preset, *(x for x in args.presets.split(",") if x)])
    spaces = [space_of(preset, configured, build) for preset in presets]
    choice = choose(train, spaces, args.preset, build, args.budget)
    return {
        "dataset": data.name,
        "device": str(resolve_device(args.device)),
        "budget_s": args.budget,
        "search": {"seconds": choice.seconds, "trials": choice.trials, "held_out_recall@20": {
            "configured": round(choice.baseline["recall@20"], 5), "chosen": round(choice.metrics["recall@20"], 5)}},
        "configured": {"preset": args.preset, "params": fixed, **test_figures(build, args.preset, fixed, train, test)},
        "chosen": {"preset": choice.preset, "params": choice.params,
                   **test_figures(build, choice.preset, choice.params, train, test)},
    }  # fmt: skip


def test_figures(
    build: Any, preset: str, params: Mapping[str, float], train: Interactions, test: Interactions
) -> dict[str, Any]:
    """``preset`` with ``params`` fitted on all of ``train``: its fit seconds and test figures."""
    model = build(preset, params)
    started = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - started
    figures = evaluate(EmbeddingScorer(model, train), train, test, ks=(10, 20, 40))
    print(f"  {preset} {dict(params)}: fit {seconds:.1f}s, test recall@20 {figures['recall@20']:.4f}", flush=True)
    return {"fit_s": round(seconds, 2), "test": {k: round(float(figures[k]), 5) for k in SHOWN}}


if __name__ == "__main__":
    print(json.dumps(main()))
