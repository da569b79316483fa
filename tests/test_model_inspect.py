"""``recd model inspect``: a saved model's item biases and nearest neighbours, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.runtime.cli import main
from tests.test_cli import one_line_error, recd
from tests.test_mf_ncf import CLUSTERS, mf, planted
from trainer.interactions import Interactions
from trainer.models.base import EmbeddingModel
from trainer.models.ials import ImplicitALS
from trainer.snapshot import ModelStore, save_snapshot


def with_a_hit(data: Interactions) -> Interactions:
    """The planted clusters, plus ``hit``, which every user consumed whatever their cluster."""
    users = [data.user_ids[u] for u in data.users.tolist()]
    items = [data.item_ids[i] for i in data.items.tolist()]
    everyone = sorted(set(users))
    return Interactions.from_ids(
        users + everyone, items + ["hit"] * len(everyone), ts=list(range(len(users) + len(everyone)))
    )


def publish(model: EmbeddingModel, root: Path) -> str:
    store = ModelStore(root)
    version = store.new_version(model.kind)
    save_snapshot(model, store.path(version), version=version, data_watermark={}, metrics={}, parent_version=None)
    store.publish(version)
    return version


@pytest.fixture(scope="module")
def mf_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = mf(loss="bce", epochs=40)
    model.fit(with_a_hit(planted()))
    root = tmp_path_factory.mktemp("models")
    publish(model, root)
    return root


def test_the_item_everyone_took_has_the_highest_bias_and_neighbours_share_a_cluster(
    mf_models: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECD_MODEL_DIR", str(mf_models))
    assert main(["model", "inspect", "--items", "i1_3,i2_5", "-k", "4", "--top", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_type"] == "mf" and doc["items"] == CLUSTERS * 12 + 1
    assert doc["highest_bias"][0]["item_id"] == "hit"
    assert len(doc["highest_bias"]) == len(doc["lowest_bias"]) == 3
    assert doc["lowest_bias"][0]["bias"] <= doc["highest_bias"][-1]["bias"]
    for item, cluster in (("i1_3", "i1_"), ("i2_5", "i2_")):
        near = doc["neighbours"][item]
        assert len(near) == 4 and item not in {n["item_id"] for n in near}
        assert [n["cosine"] for n in near] == sorted((n["cosine"] for n in near), reverse=True)
        assert sum(n["item_id"].startswith(cluster) for n in near) >= 3, near


def test_titles_from_a_recbole_item_file_name_the_items(mf_models: Path, tmp_path: Path) -> None:
    titles = tmp_path / "shop.item"
    titles.write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\nhit\tThe Hit\tPop\ni1_3\tOne Three\tX\n")
    done = recd("model", "inspect", "--items", "i1_3", "--titles", str(titles), env={"RECD_MODEL_DIR": str(mf_models)})
    assert done.returncode == 0, done.stderr
    assert "highest item bias:" in done.stdout and "hit (The Hit)" in done.stdout
    assert "nearest to i1_3 (One Three):" in done.stdout


def test_a_model_without_biases_says_so_and_unknown_items_are_one_line(tmp_path: Path) -> None:
    model = ImplicitALS(dim=8, epochs=5, device="cpu", threads=1)
    model.fit(planted())
    publish(model, tmp_path)
    env = {"RECD_MODEL_DIR": str(tmp_path)}
    done = recd("model", "inspect", env=env)
    assert done.returncode == 0, done.stderr
    assert "this model learns no item bias" in done.stdout and done.stdout.count("nearest to ") == 10
    assert "items not in model" in one_line_error(recd("model", "inspect", "--items", "nope", env=env))
    assert "no model published yet" in one_line_error(
        recd("model", "inspect", env={"RECD_MODEL_DIR": str(tmp_path / "x")})
    )
