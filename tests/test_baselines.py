"""trainer.evaluation.baselines on small clustered data: they find the clusters popularity cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.evaluation.baselines import FactorScorer, PopularityScorer, make_baseline, tune_baseline, user_sentences
from trainer.evaluation.scoring import evaluate
from trainer.evaluation.splits import leave_latest_out
from trainer.interactions import Interactions

N_CLUSTERS = 4
SMALL = {
    "als": {"factors": 16, "iterations": 10},
    "bpr": {"factors": 16, "iterations": 60, "learning_rate": 0.05},
    "gensim": {"vector_size": 16, "epochs": 10, "window": 5},
}


def clustered(n_users: int = 300, n_items: int = 120, per_user: int = 12, seed: int = 0) -> Interactions:
    """Users of cluster c consume items of cluster c (item i is in cluster i % 4), with a popular item per cluster."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        own = np.arange(u % N_CLUSTERS, n_items, N_CLUSTERS)
        p = 1.0 / np.arange(1, len(own) + 1)
        for i in rng.choice(own, per_user, replace=False, p=p / p.sum()):
            users.append(f"u{u}")
            items.append(f"i{i}")
    ts = 1_600_000_000_000 + rng.permutation(len(users)).astype(np.int64) * 1000
    return Interactions.from_ids(users, items, ts=ts)


@pytest.fixture(scope="module")
def split() -> tuple[Interactions, Interactions]:
    return leave_latest_out(clustered())


def test_popularity_scores_train_counts(split: tuple[Interactions, Interactions]) -> None:
    train, _ = split
    scores = PopularityScorer(train).score(np.array([0, 5], np.int32))
    assert scores.shape == (2, train.n_items)
    assert np.array_equal(scores[1], train.positives().item_counts().astype(np.float32))


@pytest.mark.parametrize("name", ["als", "bpr", "gensim"])
def test_learned_baselines_beat_popularity(name: str, split: tuple[Interactions, Interactions]) -> None:
    train, test = split
    popular = evaluate(make_baseline("popularity", train), train, test)
    scorer = make_baseline(name, train, seed=0, **SMALL[name])
    assert isinstance(scorer, FactorScorer) and scorer.name == name
    result = evaluate(scorer, train, test, with_auc=True)
    assert result["recall@20"] > popular["recall@20"] + 0.1, (result, popular)
    assert result["auc"] > 0.7  # held-out co-consumed pairs are closer than random pairs
    assert scorer.item_vectors().shape == (train.n_items, 16)  # BPR's bias column is left out


@pytest.mark.parametrize("name", ["als", "gensim"])
def test_seeded_baselines_are_reproducible(name: str, split: tuple[Interactions, Interactions]) -> None:
    train, _ = split
    users = np.arange(10, dtype=np.int32)
    first = make_baseline(name, train, seed=3, **SMALL[name]).score(users)
    again = make_baseline(name, train, seed=3, **SMALL[name]).score(users)
    other = make_baseline(name, train, seed=4, **SMALL[name]).score(users)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_user_sentences_follow_time_order() -> None:
    data = Interactions.from_ids(["a", "a", "b", "a"], ["x", "y", "x", "z"], weights=[1, 1, 1, 0], ts=[5, 1, 2, 0])
    assert user_sentences(data) == [["1", "0"], ["0"]]  # a: y (ts 1) then x (ts 5); z is not positive


def test_tune_baseline_returns_the_best_trial(split: tuple[Interactions, Interactions]) -> None:
    train, _ = split
    best, trials = tune_baseline("als", train, grid={"factors": [2, 16], "iterations": [5]})
    assert [p for p, _ in trials[:2]] == [{"factors": 2, "iterations": 5}, {"factors": 16, "iterations": 5}]
    assert best == max(trials, key=lambda t: t[1])[0]
    assert all(p["factors"] in (128, 1024) and p["iterations"] == 5 for p, _ in trials[2:])  # past the edge 16
    assert tune_baseline("popularity", train) == ({}, [])


def test_unknown_baseline() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("svd", clustered(n_users=8, n_items=8, per_user=2))


def test_run_evaluation_tunes_a_preset_with_a_grid_on_validation_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.evaluation.report import run_evaluation
    from trainer.models import registry

    data = clustered(n_users=60, n_items=30, per_user=6)
    lines = [f"u{u} i{i} 1 {t}" for t, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True))]
    (tmp_path / "plays.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(registry.TUNING_GRIDS, "ials", {"dim": [2, 8], "epochs": [2]})
    tuned = run_evaluation(tmp_path / "plays.txt", models=["ials"], tune=True, with_auc=False)["models"]["ials"]
    assert tuned["params"]["epochs"] == 2 and tuned["params"]["dim"] in (2, 8, 32, 128, 512)  # grid, or past 8
    plain = run_evaluation(tmp_path / "plays.txt", models=["ials"], tune=False, with_auc=False)["models"]["ials"]
    assert "params" not in plain and "recall@20" in plain


def test_tail_preset_keeps_the_strongest_tilt_within_the_recall_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.evaluation.tuning import tune_preset
    from trainer.models import registry

    data = clustered(n_users=80, n_items=40, per_user=8)
    monkeypatch.setitem(registry.TUNING_GRIDS, "ials", {"dim": [4], "epochs": [3]})
    monkeypatch.setitem(registry.TAIL_SWEEPS, "ials_tail", ("ials", "tail_weight", [1e-4, 100.0]))
    chosen = tune_preset("ials_tail", data, seed=0)
    assert chosen == {"dim": 4, "epochs": 3, "tail_weight": 1e-4}  # 100 ranks by unpopularity alone: far below
    assert tune_preset("item2vec", data, seed=0) == {}  # no grid, no sweep: the preset as it is
