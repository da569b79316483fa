"""side_info (EGES-style skip-gram with attributes) on planted data, and the cold-item protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.planted import CLUSTERS, PER_CLUSTER, planted
from trainer.attributes import ItemAttributes
from trainer.evaluation.cold_items import BASELINES, baseline_scores, ranking_figures, split_cold_items
from trainer.interactions import Interactions
from trainer.models import registry
from trainer.models.side_info import SideInfo
from trainer.snapshot import load_snapshot, save_snapshot

FAST = {"dim": 16, "epochs": 30, "batch": 256, "lr": 0.03}


def catalogue(clusters: range = range(CLUSTERS), extra: int = 1) -> ItemAttributes:
    """Every item's cluster as attribute ``cat`` plus a ``noise`` value shared across clusters; ``extra`` more
    items per cluster (k >= PER_CLUSTER) that no user ever touches."""
    return ItemAttributes.from_mapping(
        {f"i{c}_{k}": {"cat": f"c{c}", "noise": f"n{k % 3}"} for c in clusters for k in range(PER_CLUSTER + extra)}
    )


def fitted(seed: int = 3, data: Interactions | None = None, attrs: ItemAttributes | None = None) -> SideInfo:
    model = registry.build_preset("side_info", seed=seed, device="cpu", threads=1, **FAST)
    assert isinstance(model, SideInfo)
    if attrs is not None:
        model.set_attributes(attrs)
    model.fit(planted() if data is None else data)
    return model


def cluster(item: str) -> str:
    return item.split("_")[0]


def test_a_new_item_known_by_its_attributes_lands_in_its_cluster() -> None:
    model = fitted(attrs=catalogue())
    cold = catalogue().align([f"i{c}_{PER_CLUSTER}" for c in range(CLUSTERS)])  # never in any event
    assert not set(cold.item_ids) & set(model.item_ids)
    sims = model.similar_for_attributes(cold) @ model.similar_vectors().T  # (4, n_items)
    near = np.argsort(-sims, axis=1)[:, :5]
    same = [cluster(model.item_ids[j]) == cluster(cold.item_ids[i]) for i in range(CLUSTERS) for j in near[i]]
    assert np.mean(same) > 0.9
    # each cluster's users rank their cluster's new item first among the new items
    users = [np.array([model.item_index()[f"i{c}_{k}"] for k in range(3)]) for c in range(CLUSTERS)]
    from trainer.models.base import History

    query = model.query_vectors([History(items, np.ones(3, np.float32)) for items in users])
    scores = query @ model.vectors_for_attributes(cold).T  # (4 users, 4 new items)
    assert scores.argmax(axis=1).tolist() == list(range(CLUSTERS))
    assert model.vectors_for_attributes(cold).shape[1] == model.index_vectors().shape[1]


def test_fit_without_attributes_works_and_cpu_fit_is_reproducible() -> None:
    plain = fitted()
    assert plain.field_weights() == {"<id>": 1.0}
    sims = plain.similar_vectors() @ plain.similar_vectors().T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :5]
    ids = plain.item_ids
    assert np.mean([cluster(ids[j]) == cluster(ids[i]) for i in range(len(ids)) for j in near[i]]) > 0.9
    a, b = fitted(attrs=catalogue()), fitted(attrs=catalogue())
    np.testing.assert_array_equal(a.index_vectors(), b.index_vectors())
    np.testing.assert_array_equal(a.table("logits_in"), b.table("logits_in"))
    assert not np.array_equal(a.index_vectors(), fitted(seed=4, attrs=catalogue()).index_vectors())


def test_warm_start_keeps_rows_and_attribute_embeddings_and_adds_new_values() -> None:
    old = fitted(attrs=catalogue())
    new = registry.build_preset("side_info", seed=0, device="cpu", threads=1, **FAST)
    assert isinstance(new, SideInfo)
    later = range(4, 6)
    new.set_attributes(catalogue(later))
    report = new.fit(planted(n_users=40, clusters=later, seed=9), warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids and report.new_items == 2 * PER_CLUSTER
    for table in ("in", "out"):
        np.testing.assert_array_equal(new.table(table)[: old.n_items], old.table(table))
    vocab = new.attributes.value_names
    assert vocab[: len(old.attributes.value_names)] == old.attributes.value_names
    assert {"cat=c4", "cat=c5"} <= set(vocab) - set(old.attributes.value_names)  # new values, new rows
    untouched = [vocab.index(f"cat=c{c}") for c in range(CLUSTERS)]  # only old, unmentioned items carry them
    for table in ("attr_in", "attr_out"):
        np.testing.assert_array_equal(new.table(table)[untouched], old.table(table)[untouched])
    assert new.attributes.align(old.item_ids).to_mapping() == old.attributes.to_mapping()  # old items keep theirs


def test_snapshot_round_trip_serves_the_same_vectors(tmp_path: Path) -> None:
    model = fitted(attrs=catalogue())
    manifest = save_snapshot(model, tmp_path / "v1", version="v1", data_watermark={}, metrics={}, parent_version=None)
    back, read = load_snapshot(tmp_path / "v1")
    assert isinstance(back, SideInfo) and read.model_type == "side" == manifest.model_type
    assert back.side == model.side and back.config == model.config
    np.testing.assert_array_equal(back.index_vectors(), model.index_vectors())
    np.testing.assert_array_equal(back.similar_vectors(), model.similar_vectors())
    cold = catalogue().align(["i0_12", "unknown"])
    np.testing.assert_array_equal(back.vectors_for_attributes(cold), model.vectors_for_attributes(cold))
    assert back.attributes.to_mapping() == model.attributes.to_mapping()
    assert not back.attribute_vectors(cold)[1].any()  # no known value: a zero row


def test_cold_split_holds_items_out_whole_and_rewards_a_perfect_scorer() -> None:
    data = planted()
    split = split_cold_items(data, share=0.25, seed=1)
    assert len(split.cold_ids) == 12 and not set(split.cold_ids) & set(split.train.item_ids)
    assert len(split.train) == int(np.isin(np.array(data.item_ids)[data.items], split.train.item_ids).sum())
    assert (split.history.lengths() > 0).all() and (split.relevant.lengths() > 0).all()
    perfect = np.zeros((len(split.users), len(split.cold_ids)), np.float32)
    perfect[np.repeat(np.arange(len(split.users)), split.relevant.lengths()), split.relevant.items] = 1.0
    assert ranking_figures(perfect, split, k=5)["recall@5"] == 1.0
    for name in BASELINES:
        assert baseline_scores(name, split, catalogue()).shape == perfect.shape
