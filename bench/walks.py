"""Random-walk generation at scale: DeepWalk (or node2vec) walks on a synthetic graph in bounded memory.

    .venv/bin/python -m bench.walks --items 200000 --edges 4000000
    .venv/bin/python -m bench.walks --items 1000000 --edges 20000000 --walks-per-node 1

The graph is ``--edges`` undirected edges between uniformly random items
(both directions stored, weights 1..10), built straight into CSR arrays;
walks come from ``trainer.models.walks`` in chunks that are counted and
dropped. The LAST stdout line is one JSON object: items, edges (undirected; stored both ways), walks,
walks/s, steps/s and peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Sequence

import numpy as np

from trainer.models.walks import Graph, walk_starts, walks


def synthetic_graph(n_items: int, n_edges: int, rng: np.random.Generator) -> Graph:
    """``n_edges`` random undirected edges (self-loops dropped; both directions kept; duplicates kept)."""
    a = rng.integers(0, n_items, n_edges, dtype=np.int64)
    b = rng.integers(0, n_items, n_edges, dtype=np.int64)
    keep = a != b
    src, dst = np.concatenate([a[keep], b[keep]]), np.concatenate([b[keep], a[keep]])
    del a, b
    weight = rng.integers(1, 11, len(src)).astype(np.float64)
    return Graph.from_edges(src, dst, weight, n_items)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--edges", type=int, default=4_000_000)
    parser.add_argument("--walks-per-node", type=int, default=1)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--p", type=float, default=1.0)
    parser.add_argument("--q", type=float, default=1.0)
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    graph = synthetic_graph(args.items, args.edges, rng)
    built_s, rss_graph = time.perf_counter() - started, peak_rss_mib()
    starts = walk_starts(graph, args.walks_per_node, rng)
    started, n_walks = time.perf_counter(), 0
    for block in walks(graph, starts, args.length, rng, p=args.p, q=args.q, chunk=args.chunk):
        n_walks += len(block)
    seconds = time.perf_counter() - started
    result = {
        "items": args.items,
        "edges": args.edges,
        "directed_edges": graph.n_edges,
        "walks": n_walks,
        "length": args.length,
        "p": args.p,
        "q": args.q,
        "graph_s": round(built_s, 2),
        "walk_s": round(seconds, 2),
        "walks_per_s": round(n_walks / max(seconds, 1e-9), 1),
        "steps_per_s": round(n_walks * (args.length - 1) / max(seconds, 1e-9), 1),
        "peak_rss_mib_after_graph": round(rss_graph, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
