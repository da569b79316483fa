"""Fit time and memory of the attribute map (trainer/attribute_map.py) at catalogue scale: what a serving
process pays at every model swap to place new items.

    .venv/bin/python -m bench.attribute_map --items 1000000 --values 50000 --per-item 10 --dim 64

A synthetic catalogue: every item has ``--per-item`` values drawn Zipf-like from ``--values`` (a long tail of
rare ones), its rows (recommendation and similar-items spaces, ``--dim`` wide) random. Prints the last line as
JSON: ``fit_s``, ``features`` (values the map keeps), ``ridge``, ``place_per_s`` (items placed per second,
one batch of 1,000), ``rss_before_fit_bytes`` (the catalogue and rows) and ``peak_rss_bytes``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.scale_stages import status_bytes
from trainer.attribute_map import AttributeMap
from trainer.attributes import ItemAttributes


def catalogue(items: int, values: int, per_item: int, seed: int) -> ItemAttributes:
    """``items`` items with ``per_item`` Zipf-drawn values each (repeats dropped), as CSR arrays."""
    rng = np.random.default_rng(seed)
    drawn = np.minimum(rng.zipf(1.3, items * per_item), values) - 1
    lengths = np.full(items, per_item, np.int64)
    names = [f"tag={v}" for v in range(values)]
    fields = np.zeros(len(drawn), np.int64)
    return ItemAttributes._sorted([f"i{k}" for k in range(items)], lengths, fields, drawn, ["tag"], names)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--items", type=int, default=280_000)
    ap.add_argument("--values", type=int, default=50_000)
    ap.add_argument("--per-item", type=int, default=10)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    attrs = catalogue(args.items, args.values, args.per_item, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    targets = [rng.normal(size=(args.items, args.dim)).astype(np.float32) for _ in range(2)]
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    mapping = AttributeMap.fit(attrs, targets)
    fit_s = time.perf_counter() - started
    fresh = catalogue(1000, args.values, args.per_item, args.seed + 2)
    started = time.perf_counter()
    rows, _ = mapping.apply(fresh)
    place_s = time.perf_counter() - started
    figures = {
        "items": args.items,
        "values": args.values,
        "per_item": args.per_item,
        "dim": args.dim,
        "features": int((mapping.column >= 0).sum()),
        "ridge": mapping.ridge,
        "fit_s": round(fit_s, 2),
        "placed": len(rows),
        "place_per_s": round(len(rows) / place_s),
        "rss_before_fit_bytes": before,
        "peak_rss_bytes": status_bytes("VmHWM"),
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
