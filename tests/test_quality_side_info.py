"""side_info as a row of ``recd evaluate`` (``trainer.evaluation.report``) and ``bench.quality``: it is fitted with
the dataset's item attributes, aligned to the train split's item ids, or on ids alone where the dataset has none."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench import quality
from tests.planted import CLUSTERS, PER_CLUSTER, planted
from trainer.attributes import ItemAttributes
from trainer.evaluation.report import run_evaluation
from trainer.evaluation.tuning import NO_ATTRIBUTES
from trainer.models import registry
from trainer.models.side_info import SideInfo

FULL_RANKING = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def write_movielens(folder: Path, n_users: int = 48) -> Path:
    """A MovieLens-style ``ratings.csv`` of planted clusters: cluster c's items share genre ``G{c}`` and a year."""
    data = planted(n_users=n_users, per_user=5)
    lines = ["userId,movieId,rating,timestamp,title,year,genres"]
    for t, (u, i) in enumerate(zip(data.users.tolist(), data.items.tolist(), strict=True)):
        item = data.item_ids[i]
        cluster = int(item[1 : item.index("_")])
        lines.append(f"{data.user_ids[u]},{item},5.0,{1000 + t},Title {item},{1990 + cluster}.0,G{cluster}|All")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_triples(path: Path) -> Path:
    """The same kind of events as plain ``user item 1 ts`` lines: no item metadata."""
    data = planted(n_users=48, per_user=5)
    rows = zip(data.users.tolist(), data.items.tolist(), strict=True)
    path.write_text("".join(f"{data.user_ids[u]} {data.item_ids[i]} 1 {t}\n" for t, (u, i) in enumerate(rows)))
    return path


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> list[ItemAttributes]:
    """Every ``ItemAttributes`` handed to a SideInfo model, in order."""
    seen: list[ItemAttributes] = []
    original = SideInfo.set_attributes

    def record(self: SideInfo, attributes: ItemAttributes) -> None:
        seen.append(attributes)
        original(self, attributes)

    monkeypatch.setattr(SideInfo, "set_attributes", record)
    return seen


def test_side_info_row_is_fitted_with_the_dataset_attributes(tmp_path: Path, given: list[ItemAttributes]) -> None:
    result = run_evaluation(
        write_movielens(tmp_path / "ml"), models=["side_info", "item2vec", "popularity"], with_auc=False
    )
    row: dict[str, Any] = result["models"]["side_info"]
    assert all(math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0 for key in FULL_RANKING)
    n_items = result["n_items"]  # the items the events mention (up to CLUSTERS x PER_CLUSTER)
    assert 0 < n_items <= CLUSTERS * PER_CLUSTER
    values = 1 + CLUSTERS + CLUSTERS + 1  # decade 1990s, a year per cluster, a genre per cluster and "All"
    assert row["attributes"] == f"3 fields, {values} values, {n_items}/{n_items} items"  # year, decade, genre
    (attributes,) = given  # the final fit only: side_info has no grid, like item2vec
    assert attributes.n_items == n_items and bool((attributes.lengths() > 0).all())
    weights = row["field_weights"]
    assert set(weights) == {"<id>", "year", "decade", "genre"}
    assert all(0.0 < w < 1.0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert "attributes" not in result["models"]["item2vec"] and "attributes" not in result["models"]["popularity"]


def test_tuned_side_info_candidates_get_the_attributes_too(
    tmp_path: Path, given: list[ItemAttributes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.TUNING_GRIDS, "side_info", {"epochs": [1, 2], "dim": [8]})
    row = run_evaluation(write_movielens(tmp_path / "ml"), models=["side_info"], tune=True, with_auc=False)["models"][
        "side_info"
    ]
    assert row["params"]["dim"] == 8 and row["params"]["epochs"] in (1, 2, 4, 8, 16, 32, 64, 128)  # or past 2
    assert len(given) >= 3 and all(bool((a.lengths() > 0).all()) for a in given)  # 2+ candidates, then the fit


def test_bench_quality_row_says_side_info_fitted_on_ids_alone(
    tmp_path: Path, given: list[ItemAttributes], capsys: pytest.CaptureFixture[str]
) -> None:
    result = quality.run(write_triples(tmp_path / "plays.txt"), ["side_info", "popularity"], seed=0, tune=False)
    row = result["models"]["side_info"]
    assert "error" not in row and all(row[key] is not None and math.isfinite(row[key]) for key in FULL_RANKING)
    assert row["attributes"] == NO_ATTRIBUTES and row["field_weights"] == {"<id>": 1.0}
    assert given == []  # nothing to give: plain skip-gram over ids
    assert f"side_info: attributes {NO_ATTRIBUTES}" in quality.table(result["models"])
    assert "side_info" in quality.DEFAULT_MODELS


def test_bench_tune_gives_side_info_the_dataset_attributes(tmp_path: Path, given: list[ItemAttributes]) -> None:
    from bench import tune

    folder = write_movielens(tmp_path / "ml")
    grid = ["--grid", "epochs=1,2", "--grid", "dim=8", "--extend", "0"]
    result = tune.main(["--dataset", str(folder), "--preset", "side_info", *grid])
    assert result["chosen"] in ({"epochs": 1, "dim": 8}, {"epochs": 2, "dim": 8})
    assert len(given) == 3  # each candidate on the validation split, then the chosen one on train
    assert all(a.n_items > 0 and bool((a.lengths() > 0).all()) for a in given)
    assert all(math.isfinite(result["test"][key]) for key in FULL_RANKING)
