"""ANN benchmark: single-query QPS and recall@10 against exact search, on one core.

The data imitates trained item embeddings (MF, item2vec), which are neither
uniform nor full-rank:

* items: ``--clusters`` taste clusters with Zipf(1) sizes (the largest of 2,000
  holds ~12% of the catalogue), each a centre plus Gaussian spread (radius drawn
  per cluster in [0.25, 0.6] of the centre scale) in a ``--latent``-dimensional
  space (16: the spectrum of a trained 64-d embedding falls off fast), mapped to
  ``--dim`` dims by a random linear map, plus isotropic noise in all ``--dim``
  dims (0.15 per coordinate, so the vectors are full rank); each row is then
  rescaled to a log-normal norm (sigma 0.25: p5/p50/p95 = 0.66/1.0/1.5, max ~3),
  as popular items get longer vectors, so inner product != cosine ranking;
* queries: user vectors as recd builds them, a recency-weighted (0.8^age) mean
  of 2-8 history items, drawn from one home cluster (picked in proportion to
  cluster size) with, for half of the users, the newest item from anywhere.

The metric is inner product, as the serving index uses. Each index kind is built
with ``daemon.serve.index.build_index`` and queried with ``daemon.serve.index.search`` (what
recd serves), one query per call, on one thread. Besides wall-clock QPS, each
setting reports ``cpu_qps`` (queries per CPU-second of the searching thread,
less sensitive to other jobs on a shared machine), ``ndis`` (distance
computations per query, machine-independent) and the load average.

    python bench/ann.py --items 1000000 --dim 64

Last line: JSON with every setting's figures and the fastest one (median
wall-clock QPS over ``--repeats`` passes) meeting recall@10 >= 0.97.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import python_loop_seconds
from daemon.runtime.options import index_spec
from daemon.runtime.settings import load_settings
from daemon.serve.index import build_index, search

DEFAULTS = load_settings(environ={})

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
TARGET_RECALL = 0.97
TARGET_QPS = 5000


def clustered(n: int, dim: int, clusters: int, latent: int, rng: np.random.Generator) -> tuple[F32, I64]:
    """(items (n, dim), cluster of each item); see the module docstring."""
    basis = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    spread = rng.uniform(0.25, 0.6, clusters).astype(np.float32)
    sizes = 1.0 / np.arange(1, clusters + 1)
    which = rng.choice(clusters, n, p=sizes / sizes.sum())
    z = centres[which] + spread[which, None] * rng.normal(size=(n, latent)).astype(np.float32)
    x = z @ basis + 0.15 * rng.normal(size=(n, dim)).astype(np.float32)
    norms = rng.lognormal(0.0, 0.25, (n, 1)).astype(np.float32)
    items = x / np.linalg.norm(x, axis=1, keepdims=True) * norms
    return np.ascontiguousarray(items, np.float32), which.astype(np.int64)


def user_queries(items: F32, which: I64, n: int, rng: np.random.Generator) -> F32:
    """Recency-weighted means of 2-8 items of one home cluster (half with one stray newest item)."""
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(int(which.max()) + 2))
    out = np.empty((n, items.shape[1]), np.float32)
    for row in range(n):
        home = which[rng.integers(0, len(items))]
        members = order[bounds[home] : bounds[home + 1]]
        length = int(rng.integers(2, 9))
        picked = members[rng.integers(0, len(members), length)]
        if rng.random() < 0.5:
            picked[-1] = rng.integers(0, len(items))
        weights = 0.8 ** np.arange(length)[::-1]
        out[row] = (weights[:, None] * items[picked]).sum(0) / weights.sum()
    return out


def exact(items: F32, queries: F32, k: int, threads: int) -> I64:
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(items)
    _, ids = flat.search(queries, k)
    return np.asarray(ids, np.int64)


def measure(index: Any, queries: F32, truth: I64, k: int) -> dict[str, float]:
    """One pass, one query per call on one thread: wall QPS, CPU QPS, distances per query, recall@k."""
    faiss.omp_set_num_threads(1)
    stats: Any = faiss.cvar  # SWIG globals: the stubs do not list the search counters
    stats.hnsw_stats.reset()
    stats.indexIVF_stats.reset()
    found = np.empty((len(queries), k), np.int64)
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(len(queries)):
        found[i] = search(index, queries[i : i + 1], k)[1][0]
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    ndis = stats.hnsw_stats.ndis + stats.indexIVF_stats.ndis
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return {
        "qps": len(queries) / wall,
        "cpu_qps": len(queries) / max(cpu, 1e-9),
        "ndis": ndis / len(queries),
        "recall": hits / truth.size,
    }


def sweep(kind: str, index: Any, queries: F32, truth: I64, settings: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    param = {"hnsw": "ef_search", "ivf": "nprobe"}.get(kind, "exact")
    for value in settings:
        if kind == "hnsw":
            index.hnsw.efSearch = value
        elif kind == "ivf":
            index.nprobe = value
        runs = [measure(index, queries, truth, 10) for _ in range(repeats)]
        row = {
            "kind": kind,
            param: value,
            "qps": round(statistics.median(r["qps"] for r in runs)),
            "qps_runs": [round(r["qps"]) for r in runs],
            "cpu_qps_runs": [round(r["cpu_qps"]) for r in runs],
            "ndis": round(runs[0]["ndis"]),
            "recall@10": round(runs[0]["recall"], 4),
            "load": round(os.getloadavg()[0], 2),
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--kinds", default="hnsw")
    ap.add_argument("--hnsw-m", type=int, default=DEFAULTS.index_hnsw_m)
    ap.add_argument("--ef-construction", type=int, default=DEFAULTS.index_ef_construction)
    ap.add_argument("--ef-search", default="32,48,64,80,96,128")
    ap.add_argument("--nprobe", default="8,16,32,48,64")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    ap.add_argument("--build-threads", type=int, default=2)
    return ap.parse_args()


def build_and_sweep(kind: str, items: F32, queries: F32, truth: I64, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build one index kind with recd's settings and sweep its search grid; each row carries the build time."""
    spec = dataclasses.replace(
        index_spec(DEFAULTS),
        kind=kind,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        threads=args.build_threads,
    )
    faiss.omp_set_num_threads(args.build_threads)
    started = time.perf_counter()
    index = build_index(items, spec)
    built = time.perf_counter() - started
    print(f"{kind}: built in {built:.1f}s on {args.build_threads} threads", flush=True)
    grid = {"hnsw": args.ef_search, "ivf": args.nprobe}.get(kind, "1")
    settings = [int(v) for v in grid.split(",")]
    return [{**row, "build_s": round(built, 1)} for row in sweep(kind, index, queries, truth, settings, args.repeats)]


def report(args: argparse.Namespace, rows: list[dict[str, Any]], loop_before: float) -> dict[str, Any]:
    """The last line's JSON: the run's settings, every setting's figures and the fastest meeting the recall target."""
    ok = [r for r in rows if r["recall@10"] >= TARGET_RECALL]
    best = max(ok, key=lambda r: r["qps"]) if ok else None
    return {
        "items": args.items,
        "dim": args.dim,
        "latent": args.latent,
        "clusters": args.clusters,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "threads": 1,
        "target_recall": TARGET_RECALL,
        "best": best,
        f"meets_{TARGET_QPS}_qps": bool(best and best["qps"] >= TARGET_QPS),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "configs": rows,
        "python_loop_s": [loop_before, python_loop_seconds()],
    }


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    rng = np.random.default_rng(0)
    items, which = clustered(args.items, args.dim, args.clusters, args.latent, rng)
    queries = user_queries(items, which, args.queries, rng)
    truth = exact(items, queries, 10, args.build_threads)
    rows: list[dict[str, Any]] = []
    for kind in args.kinds.split(","):
        rows.extend(build_and_sweep(kind, items, queries, truth, args))
    print(json.dumps(report(args, rows, loop_before)))


if __name__ == "__main__":
    main()
