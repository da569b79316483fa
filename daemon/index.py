"""faiss indexes over a model's item vectors, built beside the served one and swapped whole.

``ServingIndex`` bundles everything a served model version needs (the model,
its id maps, the ANN index for recommendations and the cosine index for
similar items) so a swap is one reference assignment: readers hold either the
old bundle or the new one, never a mix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from trainer.models.base import EmbeddingModel

log = logging.getLogger(__name__)

FLAT_MAX_ITEMS = 50_000  # up to this many items exact search is fast enough
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "auto"  # auto | flat | hnsw | ivf
    hnsw_m: int = HNSW_M
    ef_search: int = HNSW_EF_SEARCH
    ivf_nprobe: int = IVF_NPROBE
    threads: int = 1


def choose_kind(spec: IndexSpec, n_items: int) -> str:
    if spec.kind != "auto":
        return spec.kind
    return "flat" if n_items <= FLAT_MAX_ITEMS else "hnsw"


def build_index(vectors: npt.NDArray[np.float32], spec: IndexSpec) -> Any:
    """An inner-product faiss index over ``vectors`` (n, d)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_kind(spec, n)
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = spec.ef_search
    elif kind == "ivf":
        nlist = max(1, min(4096, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[np.random.default_rng(0).permutation(n)[: min(n, nlist * 64)]])
        index.nprobe = spec.ivf_nprobe
    else:
        raise ValueError(f"RECD_INDEX_KIND: unknown index kind {kind!r} (auto, flat, hnsw, ivf)")
    index.add(vectors)
    return index


@dataclass
class ServingIndex:
    """One served model version: model, ids, ANN index, similar-items index."""

    version: str
    model: EmbeddingModel
    published_at: int  # epoch ms
    rec_index: Any
    sim_index: Any
    sim_vectors: npt.NDArray[np.float32]
    item_ids: list[str]
    item_pos: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0
    kind: str = "flat"

    @classmethod
    def build(cls, version: str, model: EmbeddingModel, published_at: int, spec: IndexSpec) -> ServingIndex:
        started = time.perf_counter()
        faiss.omp_set_num_threads(max(1, spec.threads))
        rec = build_index(model.index_vectors(), spec)
        sim_vectors = np.ascontiguousarray(model.similar_vectors(), dtype=np.float32)
        sim = build_index(sim_vectors, spec)
        ids = list(model.item_ids)
        seconds = time.perf_counter() - started
        kind = choose_kind(spec, len(ids))
        log.info("built %s index for model %s: %d items in %.2fs", kind, version, len(ids), seconds)
        positions = {item: k for k, item in enumerate(ids)}
        return cls(version, model, published_at, rec, sim, sim_vectors, ids, positions, seconds, kind)

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k (scores, item positions) per query row; positions -1 where fewer exist."""
        k = min(k, len(self.item_ids))
        scores, pos = self.rec_index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, pos

    def similar_batch(self, positions: npt.NDArray[np.int64], k: int) -> list[tuple[list[str], list[float]]]:
        """For each item position, the k items most like it (itself excluded)."""
        if len(positions) == 0:
            return []
        scores, found = self.sim_index.search(self.sim_vectors[positions], min(k + 1, len(self.item_ids)))
        out = []
        for own, row_pos, row_scores in zip(positions, found, scores, strict=True):
            pairs = [(self.item_ids[p], float(s)) for p, s in zip(row_pos, row_scores, strict=True)
                     if p >= 0 and p != own][:k]
            out.append(([i for i, _ in pairs], [s for _, s in pairs]))
        return out

    def similar(self, item_id: str, k: int) -> tuple[list[str], list[float]]:
        """The k items most like ``item_id`` (itself excluded); empty when unknown."""
        pos = self.item_pos.get(item_id)
        if pos is None:
            return [], []
        return self.similar_batch(np.asarray([pos], np.int64), k)[0]
