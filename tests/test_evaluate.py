"""trainer.evaluation.scoring: protocols, the metrics loop, the model adapter and the gate's holdout metric."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from trainer.datasets import Dataset
from trainer.evaluation.scoring import EmbeddingScorer, evaluate, holdout_metrics, pair_auc
from trainer.evaluation.splits import holdout_split, leave_latest_out, protocol_split, random_holdout
from trainer.interactions import FloatArray, Int32Array, Interactions
from trainer.models.base import Arrays, EmbeddingModel, EpochCallback, FitReport, History

N_CLUSTERS = 4


class TableModel(EmbeddingModel):
    """A fixed table of item vectors; a user's query is the weighted mean of their history."""

    kind = "table"

    def __init__(self, item_ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        super().__init__()
        self.item_ids = list(item_ids)
        self.vectors = np.asarray(vectors, np.float32)

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        return FitReport(self.kind, "cpu", 0, 0.0, 0, 0.0)

    def index_vectors(self) -> FloatArray:
        return self.vectors

    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        out = np.zeros((len(histories), self.vectors.shape[1]), np.float32)
        for row, h in enumerate(histories):
            if len(h.items):
                out[row] = (self.vectors[h.items] * h.weights[:, None]).sum(axis=0) / h.weights.sum()
        return out

    def similar_vectors(self) -> FloatArray:
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        return {}, {"vectors": self.vectors}

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> TableModel:
        return cls(item_ids, arrays["vectors"])


class MatrixScorer:
    """A Scorer reading a fixed (n_users, n_items) matrix."""

    def __init__(self, matrix: npt.ArrayLike) -> None:
        self.name = "matrix"
        self.matrix = np.asarray(matrix, np.float32)

    def score(self, users: Int32Array) -> FloatArray:
        return self.matrix[users].copy()


def clustered(n_users: int = 200, n_items: int = 80, per_user: int = 8, seed: int = 0) -> Interactions:
    """Users of cluster c consume items of cluster c (item i is in cluster i % N_CLUSTERS), with timestamps."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        own = np.arange(u % N_CLUSTERS, n_items, N_CLUSTERS)
        for i in rng.choice(own, per_user, replace=False):
            users.append(f"u{u}")
            items.append(f"i{i}")
    ts = 1_600_000_000_000 + rng.permutation(len(users)).astype(np.int64) * 1000
    return Interactions.from_ids(users, items, ts=ts)


def cluster_of(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.array([int(x[1:]) % N_CLUSTERS for x in ids], np.int64)


def one_hot_vectors(item_ids: Sequence[str]) -> FloatArray:
    return np.eye(N_CLUSTERS, dtype=np.float32)[cluster_of(item_ids)]


def test_leave_latest_out_holds_the_latest_positive() -> None:
    data = Interactions.from_ids(
        ["a", "a", "a", "b", "c", "c"],
        ["x", "y", "z", "x", "x", "y"],
        weights=[1, 1, 0, 1, 1, 1],
        ts=[30, 10, 99, 5, 7, 7],
    )
    train, test = leave_latest_out(data)
    held = {(test.user_ids[u], test.item_ids[i]) for u, i in zip(test.users, test.items, strict=True)}
    # a: latest positive is x (ts 30; z is later but not positive); b has one positive; c: tie -> file order
    assert held == {("a", "x"), ("c", "y")}
    assert len(train) == 4 and len(train) + len(test) == len(data)
    _, only_c = leave_latest_out(data, users=[2])
    assert len(only_c) == 1 and only_c.user_ids[only_c.users[0]] == "c"


def test_random_holdout_is_seeded_and_keeps_one_per_user() -> None:
    data = clustered(n_users=50, per_user=10)
    train, test = random_holdout(data, 0.2, seed=1)
    assert np.bincount(test.users, minlength=50).tolist() == [2] * 50
    assert np.bincount(train.users, minlength=50).min() == 8
    again = random_holdout(data, 0.2, seed=1)[1]
    other = random_holdout(data, 0.2, seed=2)[1]
    assert np.array_equal(again.items, test.items) and not np.array_equal(other.items, test.items)


def _truth(train: Interactions, test: Interactions, value_train: float, value_test: float) -> FloatArray:
    m = np.zeros((train.n_users, train.n_items), np.float32)
    m[train.users, train.items] = value_train
    m[test.users, test.items] = value_test
    return m


def test_perfect_scorer_scores_one_even_when_train_items_rank_higher() -> None:
    train, test = leave_latest_out(clustered())
    result = evaluate(MatrixScorer(_truth(train, test, 2.0, 1.0)), train, test, chunk_size=33)
    for key in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "hr@10_sampled", "ndcg@10_sampled"):
        assert result[key] == pytest.approx(1.0), key
    assert result["users"] == 200 and result["test_pairs"] == 200


def test_worst_scorer_scores_zero() -> None:
    train, test = leave_latest_out(clustered())
    noise = np.random.default_rng(0).random((train.n_users, train.n_items)).astype(np.float32)
    noise[test.users, test.items] = -1.0
    result = evaluate(MatrixScorer(noise), train, test)
    assert result["recall@20"] == 0.0 and result["ndcg@20"] == 0.0 and result["hr@10_sampled"] == 0.0


def test_random_scorer_is_at_chance_and_chunking_does_not_change_full_ranking() -> None:
    train, test = leave_latest_out(clustered(n_users=1000, n_items=400, per_user=6))
    noise = np.random.default_rng(5).random((train.n_users, train.n_items)).astype(np.float32)
    big = evaluate(MatrixScorer(noise), train, test, chunk_size=1024)
    assert big["hr@10_sampled"] == pytest.approx(0.10, abs=0.03)  # 10 of 100 candidates
    assert big["recall@20"] == pytest.approx(20 / 395, abs=0.02)
    small = evaluate(MatrixScorer(noise), train, test, chunk_size=37)
    for key in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "coverage", "tail_share"):
        assert small[key] == pytest.approx(big[key]), key


def test_coverage_and_tail_share_of_popular_and_unpopular_lists() -> None:
    train, test = leave_latest_out(clustered(n_users=300, n_items=100, per_user=10))
    pop = train.positives().item_counts().astype(np.float32)
    popular = evaluate(MatrixScorer(np.tile(pop, (train.n_users, 1))), train, test)
    rare = evaluate(MatrixScorer(np.tile(-pop, (train.n_users, 1))), train, test)
    assert popular["tail_share"] < 0.25 < 0.9 < rare["tail_share"]
    assert popular["coverage"] < 0.5


def test_embedding_scorer_maps_items_and_scores_unknown_minus_inf() -> None:
    data = clustered(n_users=40, n_items=40)
    train, test = leave_latest_out(data)
    known = [i for i in reversed(data.item_ids) if i != "i0"]  # another order, one item missing
    scorer = EmbeddingScorer(TableModel(known, one_hot_vectors(known)), train)
    users = np.arange(train.n_users, dtype=np.int32)
    scores = scorer.score(users)
    assert scores.shape == (train.n_users, train.n_items)
    assert np.isneginf(scores[:, data.item_ids.index("i0")]).all()
    same = cluster_of(data.user_ids)[:, None] == cluster_of(data.item_ids)[None, :]
    finite = np.isfinite(scores)
    assert (scores[same & finite] == 1.0).all() and (scores[~same & finite] == 0.0).all()
    assert evaluate(scorer, train, test)["recall@10"] > 0.9
    vectors = scorer.item_vectors()
    assert vectors.shape == (40, N_CLUSTERS) and not vectors[data.item_ids.index("i0")].any()


def test_embedding_scorer_recency_decay_weights() -> None:
    data = Interactions.from_ids(["a", "a", "a"], ["x", "y", "z"], weights=[1, 1, 0], ts=[1000, 3000, 9000])
    model = TableModel(["x", "y", "z"], np.eye(3))
    plain = EmbeddingScorer(model, data).histories([0])[0]
    assert plain.items.tolist() == [0, 1] and plain.weights.tolist() == [1.0, 1.0]
    decayed = EmbeddingScorer(model, data, half_life_ms=2000).histories([0])[0]
    assert decayed.weights.tolist() == pytest.approx([0.5, 1.0])


def test_pair_auc_separates_cluster_vectors_from_noise() -> None:
    data = clustered(n_users=300, n_items=120)
    train, test = leave_latest_out(data)
    good = pair_auc(one_hot_vectors(data.item_ids), train, test)
    noise = np.random.default_rng(1).normal(size=(data.n_items, 8)).astype(np.float32)
    assert good > 0.8 and abs(pair_auc(noise, train, test) - 0.5) < 0.1


def test_holdout_metrics_for_the_gate() -> None:
    data = clustered(n_users=500, n_items=200, per_user=10)
    train, test = holdout_split(data, max_users=100, seed=3)
    assert len(test) == 100 and len(train) + len(test) == len(data)
    good = holdout_metrics(TableModel(data.item_ids, one_hot_vectors(data.item_ids)), data, max_users=100, seed=3)
    noise = np.random.default_rng(2).normal(size=(data.n_items, 4))
    bad = holdout_metrics(TableModel(data.item_ids, noise), data, max_users=100, seed=3)
    assert good["users"] == 100 and {"recall@20", "ndcg@20", "hr@10_sampled"} <= set(good)
    assert good["recall@20"] > 2 * bad["recall@20"] and good["ndcg@20"] > bad["ndcg@20"]


def test_protocol_split_choice() -> None:
    data = clustered(n_users=30, n_items=20, per_user=5)
    _, test, name = protocol_split(Dataset("d", data, None, None, has_timestamps=True))
    assert name.startswith("leave-latest-out") and len(test) == 30
    _, test, name = protocol_split(Dataset("d", data, None, None, has_timestamps=False), seed=4)
    assert name.startswith("random 80/20") and len(test) == 30
    half = np.arange(len(data)) % 2 == 0
    train, test, name = protocol_split(Dataset("d", data.select(half), data.select(~half), data.select(~half)))
    assert name.startswith("given split (train / test; valid") and len(train) == len(data) - len(data) // 2
    assert len(test) == len(data) // 2  # a given valid split tunes; it is never trained on


def _hand_made_result() -> dict[str, Any]:
    full = {
        "recall@10": 0.123456,
        "ndcg@10": 0.05,
        "recall@20": 0.2,
        "ndcg@20": 0.0712345,
        "hr@10_sampled": 0.61,
        "ndcg@10_sampled": 0.33333,
        "coverage": 0.5,
        "tail_share": 0.25,
        "users": 943.0,
        "test_pairs": 943.0,
        "fit_s": 12.5,
        "eval_s": 0.25,
    }
    return {
        "dataset": "ml-100k",
        "path": "/data/ml-100k/u.data",
        "protocol": "leave-latest-out",
        "n_users": 943,
        "n_items": 1682,
        "n_train": 99057,
        "n_test": 943,
        "k": 20,
        "models": {
            "ials": {**full, "auc": 0.91, "device": "cpu", "params": {"dim": 64}},
            "ials_tail": {**full, "recall@10": 0.1, "auc": 0.875, "device": "cpu"},
            "popularity": {key: v for key, v in full.items() if key != "fit_s"},  # no auc, no fit time
        },
    }


def test_format_table_renders_every_model_aligned_with_dashes_for_missing_figures() -> None:
    from trainer.evaluation.table import format_table

    text = format_table(_hand_made_result())
    lines = text.rstrip("\n").splitlines()
    assert "ml-100k" in lines[0] and "leave-latest-out" in lines[0]
    assert all(str(n) in "\n".join(lines[:2]) for n in (943, 1682, 99057))
    head = next(i for i, line in enumerate(lines) if line.startswith("model"))
    table = lines[head:]
    assert set(table[1]) == {"-", " "}  # a rule under the column names
    rows = {line.split()[0]: line for line in table[2:]}
    assert list(rows) == ["ials", "ials_tail", "popularity"]
    names = table[0].split()
    for column in (
        "recall@10",
        "ndcg@20",
        "hr@10_sampled",
        "ndcg@10_sampled",
        "coverage",
        "tail_share",
        "auc",
        "fit_s",
    ):
        assert column in names, column
    assert len({len(line) for line in table}) == 1  # every row as wide as the header
    for column in names[1:]:  # right-aligned: each cell ends where its column name ends
        end = table[0].index(f" {column}") + len(column) + 1 if column != names[0] else 0
        for line in table[2:]:
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), (column, line)
    cells = dict(zip(names, rows["ials"].split(), strict=True))
    assert cells["recall@10"] == "0.1235" and cells["ndcg@20"] == "0.0712" and cells["users"] == "943"
    assert cells["device"] == "cpu"
    pop = dict(zip(names, rows["popularity"].split(), strict=True))
    assert pop["auc"] == "-" and pop["fit_s"] == "-" and pop["device"] == "-" and pop["coverage"] == "0.5000"


class LossModel(TableModel):
    """A TableModel whose fit reports a loss curve under its kind, like every preset of one model class."""

    kind = "ials"

    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        return FitReport(self.kind, "cpu", 3, 0.0, 0, 0.0, losses=[0.9, 0.5, 0.4])


def test_run_evaluation_labels_training_curves_by_model_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from trainer.evaluation.report import run_evaluation

    data = clustered(n_users=40, n_items=20, per_user=5)
    rows = zip(data.users.tolist(), data.items.tolist(), strict=True)
    (tmp_path / "plays.txt").write_text("".join(f"u{u} i{i} 1 {t}\n" for t, (u, i) in enumerate(rows)))
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def record(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        saved[Path(fname).name] = self
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    factory = lambda: LossModel(data.item_ids, one_hot_vectors(data.item_ids))  # noqa: E731
    result = run_evaluation(
        tmp_path / "plays.txt",
        models=["ials", "ials_tail", "popularity"],
        with_auc=False,
        plots_dir=tmp_path / "plots",
        factories={"ials": factory, "ials_tail": factory},
    )
    (curves,) = [fig for name, fig in saved.items() if name.endswith("_training_curves.png")]
    legend = curves.axes[0].get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["ials", "ials_tail"]
    from trainer.evaluation.table import format_table

    table = format_table(result)  # a real result renders too
    assert all(
        any(line.startswith(name + " ") for line in table.splitlines()) for name in ("ials", "ials_tail", "popularity")
    )
