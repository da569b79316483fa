"""faiss indexes over a model's item vectors, built beside the served one and swapped whole.

``ServingIndex`` bundles everything a served model version needs (the model,
its id maps, the ANN index for recommendations and the cosine index for
similar items) so a swap is one reference assignment: readers hold either the
old bundle or the new one, never a mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch

from trainer.fit import torch_threads
from trainer.models.base import EmbeddingModel

log = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]
Ranked = tuple[list[int], list[float]]  # positions, best first, and their scores

FLAT_MAX_ITEMS = 50_000  # up to this many items exact search is fast enough
SCORE_BUDGET = 1 << 23  # scores (float32: 32 MB) exact search holds at once: a serve batch goes in row chunks
KINDS = ("auto", "flat", "hnsw", "ivf")
IVF_MAX_LISTS = 16_384
ADD_CHUNK = 65536  # vectors added to an index at a time (the build reports progress between chunks)


@dataclass(frozen=True)
class IndexSpec:
    """The ANN index to build (the defaults, in Settings, come from bench/ann.py: docs/benchmarks.md). HNSW
    searches inner product directly: the MIPS -> L2 reduction (an extra coordinate sqrt(max_norm^2 - |x|^2),
    L2 graph) measured far worse (200k items, M 32: recall@10 0.85 against 0.99 at efSearch 128), and so did
    IVF (see _ivf)."""

    kind: str  # auto | flat | hnsw | ivf
    hnsw_m: int
    ef_search: int
    ivf_nprobe: int
    threads: int  # faiss threads while building
    ef_construction: int


def choose_kind(spec: IndexSpec, n_items: int) -> str:
    if spec.kind not in KINDS:
        raise ValueError(f"RECD_INDEX_KIND: unknown index kind {spec.kind!r} ({', '.join(KINDS)})")
    if spec.kind != "auto":
        return spec.kind
    return "flat" if n_items <= FLAT_MAX_ITEMS else "hnsw"


def _hnsw(vectors: npt.NDArray[np.float32], spec: IndexSpec) -> Any:
    index = faiss.IndexHNSWFlat(vectors.shape[1], spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = spec.ef_construction
    index.hnsw.efSearch = spec.ef_search
    return index


def _ivf(vectors: npt.NDArray[np.float32], spec: IndexSpec) -> Any:
    """IVF over inner product with spherical k-means lists.

    Plain inner-product k-means lets the longest centroids take most items: on
    bench/ann.py data (100k items, 1264 lists) the largest list held 10k items and
    nprobe 16 scanned 7.5k items for recall@10 0.83; spherical k-means (unit
    centroids) keeps the largest list at 383 and reaches 0.91 scanning 5.4k.
    HNSW does far better on the same data (see bench/ann.py).
    """
    n, dim = vectors.shape
    nlist = max(1, min(IVF_MAX_LISTS, int(4 * np.sqrt(n)), n))  # k-means needs n >= nlist
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.cp.min_points_per_centroid = 5  # no warning for a small catalogue
    index.train(vectors[np.random.default_rng(0).permutation(n)[: min(n, nlist * 64)]])
    index.nprobe = spec.ivf_nprobe
    return index


def build_index(
    vectors: npt.NDArray[np.float32], spec: IndexSpec, on_progress: Callable[[int], None] | None = None
) -> Any:
    """An inner-product faiss index over ``vectors`` (n, d); search it with ``search``. Vectors are added in
    chunks of ``ADD_CHUNK``; ``on_progress`` gets the count added so far after each."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_kind(spec, n)
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = _hnsw(vectors, spec)
    else:
        index = _ivf(vectors, spec)
    for start in range(0, n, ADD_CHUNK):
        index.add(vectors[start : start + ADD_CHUNK])
        if on_progress is not None:
            on_progress(min(n, start + ADD_CHUNK))
    return index


def top_unseen(found: list[int], scores: list[float], seen: Collection[int], k: int) -> Ranked:
    """The first ``k`` positions (and scores) of a search row not in ``seen``; stops as soon as it has them."""
    positions: list[int] = []
    kept: list[float] = []
    for pos, score in zip(found, scores, strict=True):
        if pos >= 0 and pos not in seen:
            positions.append(pos)
            kept.append(score)
            if len(positions) == k:
                break
    return positions, kept


def exact_unseen(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], seen: list[IntArray], excluded: IntArray, k: int
) -> list[Ranked]:
    """Per query row, its ``k`` best positions (and scores) by exact inner product over every item, with
    the row's ``seen`` positions and every row's ``excluded`` ones masked out first (so there is no deep
    search to filter afterwards). Rows are scored in chunks of at most ``SCORE_BUDGET`` scores."""
    step = max(16, SCORE_BUDGET // max(1, len(vectors)))
    out: list[Ranked] = []
    for lo in range(0, len(seen), step):
        out += _exact_chunk(vectors, queries[lo : lo + step], seen[lo : lo + step], excluded, k)
    return out


def _exact_chunk(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], seen: list[IntArray], excluded: IntArray, k: int
) -> list[Ranked]:
    lengths = [len(s) for s in seen]
    rows = torch.from_numpy(np.repeat(np.arange(len(seen)), lengths))
    cols = torch.from_numpy(np.concatenate(seen).astype(np.int64))  # exact_unseen passes no empty chunk
    with torch_threads(1):
        scores = torch.from_numpy(np.ascontiguousarray(queries, np.float32)) @ torch.from_numpy(vectors).T
        scores[rows, cols] = -torch.inf
        scores[:, torch.from_numpy(excluded)] = -torch.inf
        best = torch.topk(scores, min(k, len(vectors)), dim=1)
        found = torch.isfinite(best.values).sum(1).tolist()  # masked items sort last: a row keeps a prefix
    positions, values = best.indices.tolist(), best.values.tolist()
    return [(p[:n], v[:n]) for p, v, n in zip(positions, values, found, strict=True)]


def search(
    index: Any, queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-k (inner-product scores best first, positions) per query row.

    Every index kind stores the vectors uncompressed, so the scores faiss returns
    are the exact float32 inner products of query and item. Where fewer than k
    items are found the position is -1 and the score 0. faiss's HNSW keeps only
    efSearch candidates, so a search deeper than that (serving asks for up to
    k + 210 rows to filter seen items) runs with efSearch = k, or rows go missing.

    Searches run on one OpenMP thread, set here for the calling thread: OpenMP's thread count is per thread
    (the build thread's setting does not reach the serving loop), and a default team of every core, sharing
    the cores with ingest and the broker, made one query over 50k items cost 3-8 ms instead of 0.6 ms.
    """
    if k <= 0:
        rows = len(queries)
        return np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)
    faiss.omp_set_num_threads(1)  # per calling thread; see the docstring
    params = None
    if isinstance(index, faiss.IndexHNSW) and k > index.hnsw.efSearch:
        params = faiss.SearchParametersHNSW(efSearch=k)  # type: ignore[attr-defined]  # not in the stubs
    scores, pos = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
    scores[pos < 0] = 0.0
    return scores, pos


def top_scored(
    queries: npt.NDArray[np.float32], vectors: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], IntArray]:
    """Per query row, the ``k`` rows of ``vectors`` of the highest inner product (all when fewer), best first:
    (scores, rows). One product and a partial sort (torch, one thread): linear in the rows, not n log n."""
    k = min(k, len(vectors))
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    with torch_threads(1):
        scores = torch.from_numpy(np.ascontiguousarray(queries, np.float32)) @ torch.from_numpy(vectors).T
        best = torch.topk(scores, k, dim=1)
    return best.values.numpy(), best.indices.numpy()


@dataclass(frozen=True)
class ColdItems:
    """Items the served model lacks, with vectors from their catalogue attributes (both spaces): new items and
    catalogue items nobody has had yet, which can be many; searched exactly (``top_scored``: its cost grows
    with their number, see docs/operations.md). Immutable: a change makes a new one, swapped in by one
    assignment."""

    ids: list[str]
    rec: npt.NDArray[np.float32]  # (n, d) in the model's recommendation space
    sim: npt.NDArray[np.float32]  # (n, d) in its similar-items space
    since: npt.NDArray[np.int64]  # (n,) epoch ms of each item's catalogue record
    pos: dict[str, int] = field(default_factory=dict)
    per_list: int = 1  # the most cold items a similar-items list holds (RECD_NEW_ITEM_SLOTS)

    @classmethod
    def of(
        cls,
        ids: list[str],
        rec: npt.NDArray[np.float32],
        sim: npt.NDArray[np.float32],
        since: Sequence[int] | npt.NDArray[np.int64] = (),
        per_list: int = 1,
    ) -> ColdItems:
        stamps = np.asarray(since if len(since) else np.zeros(len(ids)), np.int64)
        return cls(ids, rec, sim, stamps, {item: k for k, item in enumerate(ids)}, per_list)

    def changed(
        self,
        ids: list[str],
        rec: npt.NDArray[np.float32],
        sim: npt.NDArray[np.float32],
        since: Sequence[int],
        gone: Collection[str] = (),
    ) -> ColdItems:
        """These cold items with ``ids`` added (or their vectors replaced) and ``gone`` removed."""
        drop = set(ids) | set(gone)
        keep = [k for k, item in enumerate(self.ids) if item not in drop]
        return ColdItems.of(
            [self.ids[k] for k in keep] + list(ids),
            np.concatenate([self.rec[keep], rec]).astype(np.float32),
            np.concatenate([self.sim[keep], sim]).astype(np.float32),
            np.concatenate([self.since[keep], np.asarray(since, np.int64)]),
            self.per_list,
        )

    def ranked(self, queries: npt.NDArray[np.float32], depth: int, since_ms: int = 0) -> list[list[str]]:
        """Per query row, the ``depth`` cold items of the highest score whose record is from ``since_ms`` on
        (the new ones: the cost is that of the rows ranked, not of every cold item), best first."""
        rows = np.flatnonzero(self.since >= since_ms) if since_ms > 0 else np.arange(len(self.ids))
        if not len(rows):
            return [[] for _ in range(len(queries))]
        _, found = top_scored(queries, self.rec[rows] if len(rows) < len(self.ids) else self.rec, depth)
        return [[self.ids[c] for c in row] for row in rows[found].tolist()]

    def similar(self, vectors: npt.NDArray[np.float32], k: int, banned: set[str]) -> list[list[tuple[str, float]]]:
        """Per row of ``vectors`` (similar-items space), its k most similar cold items not ``banned``."""
        if not self.ids:
            return [[] for _ in range(len(vectors))]
        scores, rows = top_scored(vectors, self.sim, k + len(banned))
        return [
            [(self.ids[c], s) for c, s in zip(row, row_scores, strict=True) if self.ids[c] not in banned][:k]
            for row, row_scores in zip(rows.tolist(), scores.tolist(), strict=True)
        ]


@dataclass
class ServingIndex:
    """One served model version: model, ids, ANN index, similar-items index."""

    version: str
    model: EmbeddingModel
    published_at: int  # epoch ms
    rec_index: Any
    rec_vectors: npt.NDArray[np.float32]
    sim_index: Any
    sim_vectors: npt.NDArray[np.float32]
    item_ids: list[str]
    item_pos: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0
    kind: str = "flat"
    cold: ColdItems | None = None  # items known only by their attributes; replaced whole (daemon/serve/catalogue.py)

    @classmethod
    def build(
        cls,
        version: str,
        model: EmbeddingModel,
        published_at: int,
        spec: IndexSpec,
        on_progress: Callable[[int], None] | None = None,
    ) -> ServingIndex:
        """The two indexes of ``model`` (lists, then similar items); ``on_progress`` gets the vectors added
        to both so far, out of twice the items."""
        started = time.perf_counter()
        faiss.omp_set_num_threads(max(1, spec.threads))
        report = on_progress or (lambda _n: None)
        rec_vectors = np.ascontiguousarray(model.index_vectors(), dtype=np.float32)
        rec = build_index(rec_vectors, spec, report)
        sim_vectors = np.ascontiguousarray(model.similar_vectors(), dtype=np.float32)
        sim = build_index(sim_vectors, spec, lambda n: report(len(rec_vectors) + n))
        ids = list(model.item_ids)
        seconds = time.perf_counter() - started
        kind = choose_kind(spec, len(ids))
        log.info("built %s index for model %s: %d items in %.2fs", kind, version, len(ids), seconds)
        positions = {item: k for k, item in enumerate(ids)}
        return cls(version, model, published_at, rec, rec_vectors, sim, sim_vectors, ids, positions, seconds, kind)

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k (scores, item positions) per query row; positions -1 where fewer exist."""
        return search(self.rec_index, queries, min(k, len(self.item_ids)))

    def top_unseen_batch(
        self, queries: npt.NDArray[np.float32], seen: list[IntArray], excluded: IntArray, k: int
    ) -> list[Ranked]:
        """Per query row, the ``k`` best positions (and scores) not among that row's ``seen`` positions nor
        ``excluded`` (fewer when the catalogue runs out). A flat index scores every item exactly with
        those masked (4x faster than faiss's flat search at the depth filtering needs); ANN indexes
        search deep enough to filter up to 200 of them."""
        if self.kind == "flat":
            return exact_unseen(self.rec_vectors, queries, seen, excluded, k)
        depth = k + min(200, max((len(s) for s in seen), default=0) + len(excluded)) + 10
        scores, found = self.search(queries, depth)
        banned = set(excluded.tolist())
        return [
            top_unseen(row_pos.tolist(), row_scores.tolist(), banned | set(row_seen.tolist()), k)
            for row_pos, row_scores, row_seen in zip(found, scores, seen, strict=True)
        ]

    def similar_batch(
        self, positions: npt.NDArray[np.int64], k: int, banned: Collection[str] = ()
    ) -> list[tuple[list[str], list[float]]]:
        """For each item position, the k items most like it (itself and ``banned`` excluded), the catalogue's
        cold items included."""
        if len(positions) == 0:
            return []
        owners = [self.item_ids[p] for p in positions.tolist()]
        return self.similar_to(self.sim_vectors[positions], owners, k, banned)

    def similar_to(
        self, vectors: npt.NDArray[np.float32], owners: list[str], k: int, banned: Collection[str] = ()
    ) -> list[tuple[list[str], list[float]]]:
        """For each row of ``vectors`` (similar-items space), the k items most like it, its owner and
        ``banned`` excluded: the model's items by the index, merged by score with the cold items."""
        skip = {self.item_pos[i] for i in banned if i in self.item_pos}
        depth = min(k + 1 + len(skip), len(self.item_ids))
        scores, found = search(self.sim_index, vectors, depth)
        # cold items' rows are predictions from attributes, nearer each other than trained rows are: a list
        # holds at most ``per_list`` of them, so that new items neither fill each other's lists nor others'
        per_list = min(k, self.cold.per_list) if self.cold is not None else 0
        cold = self.cold.similar(vectors, per_list + 1, set(banned)) if self.cold is not None and per_list else None
        out = []
        for row, (owner, row_pos, row_scores) in enumerate(zip(owners, found, scores, strict=True)):
            own = self.item_pos.get(owner, -1)
            kept, kept_scores = top_unseen(row_pos.tolist(), row_scores.tolist(), skip | {own}, k)
            pairs = list(zip((self.item_ids[p] for p in kept), kept_scores, strict=True))
            if cold is not None:
                mine = [p for p in cold[row] if p[0] != owner][:per_list]
                pairs = sorted(pairs + mine, key=lambda p: -p[1])[:k]
            out.append(([i for i, _ in pairs], [s for _, s in pairs]))
        return out

    def similar(self, item_id: str, k: int, banned: Collection[str] = ()) -> tuple[list[str], list[float]]:
        """The k items most like ``item_id`` (itself and ``banned`` excluded); empty when unknown."""
        return self.similar_items([item_id], k, banned)[0]

    def similar_items(
        self, item_ids: list[str], k: int, banned: Collection[str] = ()
    ) -> list[tuple[list[str], list[float]]]:
        """``similar`` of many items at once: the model's items in one batched search, the cold ones in
        another; an item neither knows gets empty lists."""
        out: list[tuple[list[str], list[float]]] = [([], [])] * len(item_ids)
        known = [(n, self.item_pos[i]) for n, i in enumerate(item_ids) if i in self.item_pos]
        if known:
            found = self.similar_batch(np.asarray([p for _, p in known], np.int64), k, banned)
            for (n, _), lists in zip(known, found, strict=True):
                out[n] = lists
        cold = self.cold
        rows = [(n, cold.pos[i]) for n, i in enumerate(item_ids) if i in cold.pos] if cold is not None else []
        if cold is not None and rows:
            owners = [item_ids[n] for n, _ in rows]
            found = self.similar_to(cold.sim[np.asarray([r for _, r in rows], np.int64)], owners, k, banned)
            for (n, _), lists in zip(rows, found, strict=True):
                out[n] = lists
        return out

    def knows(self, item_id: str) -> bool:
        """Whether the model or the cold items hold ``item_id``."""
        return item_id in self.item_pos or (self.cold is not None and item_id in self.cold.pos)
