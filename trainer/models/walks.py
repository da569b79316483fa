"""The item co-interaction graph and random walks over it, vectorised with bounded memory.

The graph is CSR arrays only (``indptr``, sorted ``indices`` per row, ``cumw``
the running sum of edge weights over the whole edge array): O(edges) memory,
no Python object per node or edge. Edges join two items a user interacted
with at most ``window`` positions apart in their time-ordered positives (a
``window`` at least the longest history gives plain co-occurrence in users'
positive sets); an edge's weight is how often that happened, capped at
``max_weight`` so a few heavy users cannot dominate a node's transitions.

Walks advance all walkers of a chunk in lockstep: one step is a single
``searchsorted`` on ``cumw`` (weighted choice of a neighbour, DeepWalk).
node2vec's second-order bias (return ``p``, in-out ``q``) is applied by
rejection sampling (KnightKing, Yang et al. 2019): propose a neighbour by
edge weight, accept it with ``alpha / max(alpha)`` where alpha is ``1/p``
for going back, 1 for a neighbour of the previous node and ``1/q`` otherwise;
"is a neighbour" is a vectorised binary search in the previous node's sorted
row. No alias tables per edge pair, so memory stays O(edges), where the
precomputed node2vec tables of the reference implementation grow with the
sum of squared degrees. Walks come out in chunks of ``chunk`` walkers, so
peak memory is the graph plus one (chunk, length) block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.interactions import IntArray

MAX_REJECTION_ROUNDS = 64  # proposals per step before a walker keeps its last one (expected rounds ~ max/min alpha)


@dataclass(frozen=True)
class Graph:
    """Weighted directed CSR graph: row ``v``'s neighbours are ``indices[indptr[v]:indptr[v + 1]]`` (sorted)."""

    indptr: IntArray
    indices: npt.NDArray[np.int32]
    cumw: npt.NDArray[np.float64]  # (E,) inclusive running sum of edge weights over the whole array

    @property
    def n_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_edges(self) -> int:
        return len(self.indices)

    def degrees(self) -> IntArray:
        return np.diff(self.indptr)

    @classmethod
    def from_edges(cls, src: IntArray, dst: IntArray, weight: npt.NDArray[np.float64], n_nodes: int) -> Graph:
        """CSR from edge arrays (no duplicates expected); rows and neighbours sorted."""
        order = np.lexsort((dst, src))
        indptr = np.zeros(n_nodes + 1, np.int64)
        np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
        return cls(indptr, dst[order].astype(np.int32), np.cumsum(weight[order], dtype=np.float64))


def cooccurrence_graph(
    users: IntArray, items: IntArray, ts: IntArray, n_items: int, window: int = 5, max_weight: float = 10.0
) -> Graph:
    """Undirected graph of items a user had within ``window`` positions of each other (time, then input order)."""
    order = np.lexsort((np.arange(len(users)), ts, users))
    u, i = np.asarray(users, np.int64)[order], np.asarray(items, np.int64)[order]
    keys = []
    for off in range(1, max(1, window) + 1):
        same = (u[off:] == u[:-off]) & (i[off:] != i[:-off])
        a, b = i[:-off][same], i[off:][same]
        keys += [a * n_items + b, b * n_items + a]
    if not keys:
        return Graph(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int32), np.zeros(0))
    key, counts = np.unique(np.concatenate(keys), return_counts=True)
    weight = np.minimum(counts.astype(np.float64), max_weight)
    return Graph.from_edges(key // n_items, key % n_items, weight, n_items)


def step(graph: Graph, current: IntArray, rng: np.random.Generator) -> IntArray:
    """One weighted neighbour per walker (every ``current`` node must have an edge)."""
    lo, hi = graph.indptr[current], graph.indptr[current + 1]
    base = np.where(lo > 0, graph.cumw[np.maximum(lo - 1, 0)], 0.0)
    total = graph.cumw[hi - 1] - base
    edge = np.searchsorted(graph.cumw, base + rng.random(len(current)) * total, side="right")
    return np.asarray(graph.indices[np.clip(edge, lo, hi - 1)], np.int64)


def is_edge(graph: Graph, src: IntArray, dst: IntArray) -> npt.NDArray[np.bool_]:
    """Whether ``dst[k]`` is a neighbour of ``src[k]``: a lockstep binary search in each sorted row."""
    lo, hi = graph.indptr[src].copy(), graph.indptr[src + 1].copy()
    while True:
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) // 2
        go_right = open_ & (graph.indices[np.minimum(mid, graph.n_edges - 1)] < dst)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(open_ & ~go_right, mid, hi)
    found = lo < graph.indptr[src + 1]
    return np.asarray(found & (graph.indices[np.minimum(lo, graph.n_edges - 1)] == dst), np.bool_)


def biased_step(
    graph: Graph, prev: IntArray, current: IntArray, p: float, q: float, rng: np.random.Generator
) -> IntArray:
    """node2vec's second-order step by rejection sampling (see the module docstring)."""
    top = max(1.0 / p, 1.0, 1.0 / q)
    out = step(graph, current, rng)
    pending = np.arange(len(current))
    for _ in range(MAX_REJECTION_ROUNDS):
        x, t = out[pending], prev[pending]
        alpha = np.where(x == t, 1.0 / p, np.where(is_edge(graph, t, x), 1.0, 1.0 / q))
        pending = pending[rng.random(len(pending)) * top >= alpha]
        if not len(pending):
            break
        out[pending] = step(graph, current[pending], rng)
    return out


def walk_starts(graph: Graph, walks_per_node: int, rng: np.random.Generator) -> IntArray:
    """Every node with an edge, ``walks_per_node`` times, shuffled."""
    nodes = np.flatnonzero(graph.degrees() > 0)
    return rng.permutation(np.tile(nodes, max(0, walks_per_node)))


def walks(
    graph: Graph,
    starts: IntArray,
    length: int,
    rng: np.random.Generator,
    *,
    p: float = 1.0,
    q: float = 1.0,
    chunk: int = 65_536,
) -> Iterator[npt.NDArray[np.int32]]:
    """(walkers, length) int32 blocks of walks from ``starts``, ``chunk`` walkers at a time.

    ``p == q == 1`` is DeepWalk's first-order walk (weighted by edge weight);
    otherwise node2vec's. Starts must have at least one edge (``walk_starts``).
    """
    second_order = p != 1.0 or q != 1.0
    for lo in range(0, len(starts), chunk):
        block = np.empty((min(chunk, len(starts) - lo), max(1, length)), np.int32)
        current = np.asarray(starts[lo : lo + chunk], np.int64)
        block[:, 0] = current
        prev = current
        for pos in range(1, block.shape[1]):
            nxt = (
                biased_step(graph, prev, current, p, q, rng) if second_order and pos > 1 else step(graph, current, rng)
            )
            prev, current = current, nxt
            block[:, pos] = current
        yield block


def window_pairs(
    block: npt.NDArray[np.int32], window: int, context: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Skip-gram pairs of a block of walks: every position is a target once, with ``context`` partners drawn
    uniformly from the positions at most ``window`` away inside its walk. Returns (T,) targets, (T, context)."""
    n, length = block.shape
    if length < 2:
        return np.zeros(0, np.int64), np.zeros((0, context), np.int64)
    pos = np.tile(np.arange(length), n)  # (T,)
    lo = np.maximum(pos - window, 0)
    span = np.minimum(pos + window, length - 1) - lo  # other positions in the window
    off = lo[:, None] + (rng.random((len(pos), context)) * span[:, None]).astype(np.int64)
    off = off + (off >= pos[:, None])  # skip the target's own position
    flat = block.reshape(-1).astype(np.int64)
    base = np.repeat(np.arange(n, dtype=np.int64) * length, length)
    return flat, flat[base[:, None] + off]
