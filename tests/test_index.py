"""The faiss indexes recd serves from: exact or near-exact top-k, true inner-product scores.

Small clustered catalogues (norms varying, as trained embeddings' do), checked
against brute force in numpy: flat is exact, hnsw and ivf find >= 90% of the
true top 10, every score is the query's inner product with the returned item,
missing results (-1) never turn into items, similar() leaves the item out.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from daemon.runtime.options import index_spec
from daemon.runtime.settings import load_settings
from daemon.serve.index import (
    FLAT_MAX_ITEMS,
    ColdItems,
    IndexSpec,
    ServingIndex,
    build_index,
    choose_kind,
    search,
    top_scored,
)
from trainer.interactions import Interactions
from trainer.models.base import EmbeddingModel, EpochCallback, FitReport, History

F32 = npt.NDArray[np.float32]
KINDS = ["flat", "hnsw", "ivf"]

DEFAULT_SPEC = index_spec(load_settings(environ={}))


def spec(**changes: Any) -> IndexSpec:
    """The default index spec (from Settings) with ``changes``."""
    return dataclasses.replace(DEFAULT_SPEC, **changes)


def clustered(n: int, dim: int = 16, seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 100), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.normal(size=(n, dim))
    norms = rng.lognormal(0.0, 0.25, (n, 1))
    return (x / np.linalg.norm(x, axis=1, keepdims=True) * norms).astype(np.float32)


def queries_for(items: F32, n: int, seed: int = 1) -> F32:
    rng = np.random.default_rng(seed)
    picks = items[rng.integers(0, len(items), (n, 3))]
    return (picks.mean(axis=1) + 0.1 * rng.normal(size=(n, items.shape[1]))).astype(np.float32)


def true_top(items: F32, queries: F32, k: int) -> npt.NDArray[np.int64]:
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]


class FixedModel(EmbeddingModel):
    """A model that is only its vectors: enough for ServingIndex."""

    kind: ClassVar[str] = "fixed"

    def __init__(self, vectors: F32) -> None:
        super().__init__()
        self.vectors = vectors
        self.item_ids = [f"i{k}" for k in range(len(vectors))]

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        raise NotImplementedError

    def index_vectors(self) -> F32:
        return self.vectors

    def query_vectors(self, histories: Sequence[History]) -> F32:
        return np.stack([self.vectors[h.items].mean(axis=0) for h in histories]).astype(np.float32)

    def similar_vectors(self) -> F32:
        return (self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)).astype(np.float32)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        return {}, {"vectors": self.vectors}

    @classmethod
    def from_arrays(
        cls, config: dict[str, Any], arrays: dict[str, npt.NDArray[Any]], item_ids: list[str]
    ) -> EmbeddingModel:
        return cls(arrays["vectors"])


def serving(vectors: F32, kind: str, nprobe: int = DEFAULT_SPEC.ivf_nprobe) -> ServingIndex:
    return ServingIndex.build("v1", FixedModel(vectors), 0, spec(kind=kind, ivf_nprobe=nprobe))


@pytest.mark.parametrize(("kind", "min_recall"), [("flat", 1.0), ("hnsw", 0.9), ("ivf", 0.9)])
def test_top_k_matches_brute_force(kind: str, min_recall: float) -> None:
    items, queries = clustered(3000), queries_for(clustered(3000), 100)
    _, found = search(build_index(items, spec(kind=kind)), queries, 10)
    truth = true_top(items, queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist(), strict=True)])
    assert recall >= min_recall, f"{kind}: recall@10 {recall:.3f}"


@pytest.mark.parametrize("kind", KINDS)
def test_scores_are_the_true_inner_products_best_first(kind: str) -> None:
    items = clustered(3000)
    queries = queries_for(items, 50)
    scores, found = serving(items, kind).search(queries, 20)
    assert (found >= 0).all()
    expected = np.einsum("qd,qkd->qk", queries, items[found])
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores must be sorted best first"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_deep_search_beyond_ef_search_still_fills_k(kind: str) -> None:
    """Serving asks for up to k + 210 rows; an HNSW efSearch of 16 must not cap that."""
    items = clustered(3000)
    shallow = spec(kind=kind, ef_search=16, ivf_nprobe=64)
    _, found = search(build_index(items, shallow), queries_for(items, 5), 220)
    assert found.shape == (5, 220)
    assert (found >= 0).all()
    assert all(len(set(row)) == 220 for row in found.tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_missing_results_are_minus_one_with_zero_score(kind: str) -> None:
    items = clustered(40)
    scores, found = search(build_index(items, spec(kind=kind)), queries_for(items, 3), 50)
    assert ((found >= 0).sum(axis=1) <= 40).all()
    assert (found[:, 40:] == -1).all()
    assert (scores[found < 0] == 0.0).all()
    assert sorted(found[0][found[0] >= 0].tolist()) == list(range(40)) or kind != "flat"


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_catalogue_never_leaks_minus_one_as_an_item(kind: str) -> None:
    """item_ids[-1] is a real id: a -1 that slips through would recommend the last item."""
    index = serving(clustered(3), kind)
    scores, found = index.search(queries_for(clustered(3), 2), 10)
    assert found.shape == (2, 3)
    assert sorted(found[0].tolist()) == [0, 1, 2]
    assert (scores[0] != 0).all()
    items, sims = index.similar("i0", 10)
    assert sorted(items) == ["i1", "i2"]
    assert len(sims) == 2


def test_short_ivf_results_never_leak_minus_one_into_similar() -> None:
    """One probed list holds fewer than k items, so faiss pads with -1."""
    index = serving(clustered(3000), "ivf", nprobe=1)
    _, found = index.sim_index.search(index.sim_vectors[:20], 60)
    assert (found < 0).any(), "the setup must produce -1 rows"
    for item in range(20):
        items, sims = index.similar(f"i{item}", 60)
        assert len(set(items)) == len(items) < 60
        cosine = index.sim_vectors[[int(i[1:]) for i in items]] @ index.sim_vectors[item]
        np.testing.assert_allclose(sims, cosine, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_similar_excludes_the_item_and_ranks_by_cosine(kind: str) -> None:
    vectors = clustered(3000)
    index = serving(vectors, kind)
    unit = index.sim_vectors
    for item in (0, 17, 2999):
        items, sims = index.similar(f"i{item}", 10)
        assert f"i{item}" not in items
        assert len(items) == 10
        cosine = unit[[int(i[1:]) for i in items]] @ unit[item]
        np.testing.assert_allclose(sims, cosine, rtol=1e-3, atol=1e-5)
        cosines = unit @ unit[item]
        cosines[item] = -np.inf
        best = {f"i{k}" for k in np.argsort(-cosines)[:10]}
        assert len(best & set(items)) >= (10 if kind == "flat" else 8)
    assert index.similar("unknown", 10) == ([], [])


def test_choose_kind_by_size() -> None:
    assert choose_kind(spec(), 10) == "flat"
    assert choose_kind(spec(), FLAT_MAX_ITEMS) == "flat"
    assert choose_kind(spec(), FLAT_MAX_ITEMS + 1) == "hnsw"
    assert choose_kind(spec(kind="ivf"), 10) == "ivf"
    assert choose_kind(spec(kind="flat"), 10 * FLAT_MAX_ITEMS) == "flat"


def test_hnsw_takes_its_parameters_from_the_spec() -> None:
    index = build_index(clustered(500), spec(kind="hnsw", hnsw_m=12, ef_search=40, ef_construction=60))
    assert index.hnsw.efSearch == 40
    assert index.hnsw.efConstruction == 60
    assert index.hnsw.nb_neighbors(1) == 12


@pytest.mark.parametrize("kind", ["annoy", "HNSW", ""])
def test_unknown_kind_is_a_clear_value_error(kind: str) -> None:
    with pytest.raises(ValueError, match=r"unknown index kind .*auto, flat, hnsw, ivf"):
        build_index(clustered(20), spec(kind=kind))
    with pytest.raises(ValueError, match="RECD_INDEX_KIND"):
        choose_kind(spec(kind=kind), 10)


@pytest.mark.parametrize(("kind", "min_recall"), [("flat", 1.0), ("hnsw", 0.9), ("ivf", 0.9)])
def test_top_unseen_batch_leaves_out_seen_and_excluded_items(kind: str, min_recall: float) -> None:
    """Flat masks seen and excluded items before an exact top-k; ANN indexes filter a deep search."""
    items = clustered(2000)
    index = serving(items, kind)
    queries = queries_for(items, 40)
    truth = np.argsort(-(queries @ items.T), axis=1, kind="stable")
    seen = [truth[r, : 3 + r % 25].copy() for r in range(40)]  # each row's best items, 3..27 of them
    excluded = truth[:, 30][:3].astype(np.int64)  # items some rows would otherwise rank high
    found = index.top_unseen_batch(queries, seen, excluded, 10)
    hits = 0
    for r, (positions, scores) in enumerate(found):
        assert len(positions) == len(set(positions)) == len(scores) == 10
        assert not set(positions) & (set(seen[r].tolist()) | set(excluded.tolist()))
        np.testing.assert_allclose(scores, items[positions] @ queries[r], rtol=1e-4, atol=1e-5)
        assert scores == sorted(scores, reverse=True)
        allowed = [p for p in truth[r].tolist() if p not in set(seen[r].tolist()) | set(excluded.tolist())]
        hits += len(set(positions) & set(allowed[:10]))
    assert hits / 400 >= min_recall


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_top_unseen_batch_returns_fewer_when_everything_is_seen(kind: str) -> None:
    items = clustered(12)
    index = serving(items, kind)
    seen = [np.arange(8), np.arange(12), np.zeros(0, np.int64)]
    found = index.top_unseen_batch(queries_for(items, 3), seen, np.array([11]), 10)
    assert sorted(found[0][0]) == [8, 9, 10] and len(found[0][1]) == 3
    assert found[1] == ([], [])
    assert len(found[2][0]) == 10 and 11 not in found[2][0]


def test_exact_search_in_row_chunks_gives_what_one_chunk_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serve batch is scored a chunk of rows at a time (memory bounded by SCORE_BUDGET): every row,
    its own seen items and the shared exclusions land where they would in one pass."""
    items = clustered(2000)
    index = serving(items, "flat")
    queries = queries_for(items, 70)
    truth = np.argsort(-(queries @ items.T), axis=1, kind="stable")
    seen = [truth[r, : r % 7].copy() for r in range(70)]  # some rows have seen nothing
    excluded = truth[:5, 0].astype(np.int64)
    whole = index.top_unseen_batch(queries, seen, excluded, 10)
    monkeypatch.setattr("daemon.serve.index.SCORE_BUDGET", 2000 * 16)  # 16 rows a chunk: 5 chunks, the last short
    chunked = index.top_unseen_batch(queries, seen, excluded, 10)
    assert [p for p, _ in chunked] == [p for p, _ in whole]
    np.testing.assert_allclose([s for _, s in chunked], [s for _, s in whole], rtol=1e-6)
    for r, (positions, _) in enumerate(chunked):
        allowed = [p for p in truth[r].tolist() if p not in set(seen[r].tolist()) | set(excluded.tolist())]
        assert positions == allowed[:10]


def test_top_scored_is_a_partial_sort() -> None:
    rng = np.random.default_rng(4)
    queries, vectors = rng.standard_normal((7, 8)).astype(np.float32), rng.standard_normal((300, 8)).astype(np.float32)
    exact = queries @ vectors.T
    full = np.argsort(-exact, axis=1)
    for k in (1, 10, 299, 300, 1000):
        scores, rows = top_scored(queries, vectors, k)
        assert np.array_equal(rows, full[:, : min(k, 300)])
        assert np.allclose(scores, np.take_along_axis(exact, rows, axis=1), atol=1e-5)
    assert top_scored(queries, vectors, 0)[1].shape == (7, 0)


def test_a_search_runs_on_one_thread_in_any_calling_thread() -> None:
    """OpenMP's thread count is per thread: a serving thread must not search with a team of every core."""
    index = faiss.IndexFlatIP(8)
    index.add(np.eye(8, dtype=np.float32))
    seen: list[int] = []

    def worker() -> None:
        faiss.omp_set_num_threads(4)
        scores, pos = search(index, np.eye(8, dtype=np.float32)[:2], 3)
        assert pos[:, 0].tolist() == [0, 1] and scores[:, 0].tolist() == [1.0, 1.0]
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [1]


def test_cold_items_rank_only_the_new_ones_for_the_slots() -> None:
    unit = np.eye(4, dtype=np.float32)
    cold = ColdItems.of(["old-a", "old-b"], unit[:2], unit[:2], [1_000, 2_000])
    cold = cold.changed(["new-c"], unit[2:3], unit[2:3], [9_000], gone=["old-b"])
    assert cold.ids == ["old-a", "new-c"] and cold.since.tolist() == [1_000, 9_000]
    queries = np.asarray([[1.0, 0.0, 0.5, 0.0]], np.float32)
    assert cold.ranked(queries, 2) == [["old-a", "new-c"]]  # every cold item, by score
    assert cold.ranked(queries, 2, since_ms=5_000) == [["new-c"]]  # the record of old-a is older
    assert cold.ranked(queries, 2, since_ms=10_000) == [[]]


@pytest.mark.parametrize("per_list", [0, 1, 3])
def test_a_similar_list_holds_at_most_per_list_cold_items(per_list: int) -> None:
    """Cold rows (predicted from attributes) near each other must not fill a list: at most ``per_list`` each."""
    items = clustered(40)
    index = serving(items, "flat")
    unit = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)
    twins = np.repeat(unit[:1], 6, axis=0)  # six cold items on item i0's own direction
    index.cold = ColdItems.of([f"new{n}" for n in range(6)], twins, twins, per_list=per_list)
    for item in ("i0", "new0"):
        found, _ = index.similar(item, 10)
        assert len(found) == 10 and sum(i.startswith("new") for i in found) == per_list
        assert item not in found
