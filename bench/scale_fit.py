"""A full-size fit without Redis: the scale benchmark's synthetic world straight into training arrays.

    python bench/scale_fit.py --users 3000000 --items 2800000 --positives 90000000 --device cuda

Lit2Vec2's whole size (seed write-up 000: ~3M users, 2.8M books, ~90M positives) through the ingest path
would take hours of loading before the first epoch; what the GPU check measures is the fit itself. The
events are drawn from the same world as ``bench/scale.py`` (``bench.scale_load``), vectorised, into one
``Interactions`` (no Python object per event), and ``--preset`` (default ``item2vec``, the seed's schedule of
``--epochs 10``) is fitted on ``--device``. Last line: JSON with the draw time, seconds per epoch, pairs/s,
this process's peak RSS and, on CUDA, the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import python_loop_seconds
from bench.scale_load import World, draws
from bench.scale_stages import status_bytes
from daemon.dev.synthetic import SyntheticWorld
from trainer.interactions import Interactions
from trainer.models.registry import build_preset

log = logging.getLogger("bench.scale_fit")


def interactions(users: int, items: int, positives: int, seed: int) -> Interactions:
    """``positives`` events of the scale benchmark's world as training arrays (weight 1, time ordered)."""
    world = SyntheticWorld(World(users, items, seed).spec())
    u = np.empty(positives, np.int32)
    i = np.empty(positives, np.int32)
    ts = np.empty(positives, np.int64)
    for draw in draws(world, positives, 1_600_000_000_000, 1_602_592_000_000, seed):
        part = slice(draw.first, draw.first + len(draw.users))
        u[part], i[part], ts[part] = draw.users, draw.items, draw.ts
    ones = np.ones(positives, np.float32)
    values = np.full(positives, np.nan, np.float32)
    return Interactions(u, i, ones, values, ts, [f"u{k}" for k in range(users)], [f"i{k}" for k in range(items)])


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    data = interactions(args.users, args.items, args.positives, args.seed)
    draw_s = time.perf_counter() - started
    model = build_preset(args.preset, seed=args.seed, device=args.device, threads=args.threads, epochs=args.epochs)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    epoch_started = [started]

    def on_epoch(epoch: int, loss: float) -> None:
        now = time.perf_counter()
        log.info("epoch %d/%d: %.1f s, loss %.4f", epoch + 1, args.epochs, now - epoch_started[0], loss)
        epoch_started[0] = now

    report = model.fit(data, on_epoch=on_epoch)
    fit_s = time.perf_counter() - started
    cuda_peak = int(torch.cuda.max_memory_allocated()) if args.device.startswith("cuda") else None
    return {
        "users": args.users,
        "items": args.items,
        "positives": args.positives,
        "preset": args.preset,
        "device": report.device,
        "epochs": report.epochs,
        "draw_s": round(draw_s, 1),
        "fit_s": round(fit_s, 1),
        "fit_s_per_epoch": round(fit_s / max(1, report.epochs), 2),
        "pairs": report.samples,
        "pairs_per_s": round(report.samples / max(fit_s, 1e-9)),
        "peak_rss_bytes": status_bytes("VmHWM"),
        "cuda_peak_bytes": cuda_peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3_000_000)
    ap.add_argument("--items", type=int, default=2_800_000)
    ap.add_argument("--positives", type=int, default=90_000_000)
    ap.add_argument("--preset", default="item2vec")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop_before = python_loop_seconds()
    figures = run(args)
    print(json.dumps({**figures, "python_loop_s": [loop_before, python_loop_seconds()]}))


if __name__ == "__main__":
    main()
