"""The attribute map (ridge regression from attribute values to item rows) and how serving places new items."""

from __future__ import annotations

import numpy as np
import pytest

import trainer.attribute_map as attribute_map
from tests.planted import CLUSTERS, PER_CLUSTER, planted
from trainer.attribute_map import DEFAULT_RIDGE, RIDGES, AttributeMap, feature_columns, normal_matrix
from trainer.attribute_vectors import AttributeVectors
from trainer.attributes import ItemAttributes
from trainer.models import registry
from trainer.models.base import History


def random_catalogue(n_items: int, n_values: int, seed: int) -> ItemAttributes:
    """Items with 1-6 values each of ``n_values`` in two fields; popular values first."""
    rng = np.random.default_rng(seed)
    mapping: dict[str, dict[str, str | list[str]]] = {}
    for i in range(n_items):
        picks = np.unique(np.minimum(rng.zipf(1.6, rng.integers(1, 7)), n_values) - 1)
        mapping[f"i{i}"] = {"tag": [f"t{v}" for v in picks.tolist()], "kind": f"k{i % 3}"}
    return ItemAttributes.from_mapping(mapping)


def dense(attributes: ItemAttributes, value_names: list[str]) -> np.ndarray:
    """(items, values) 0/1 matrix of ``attributes`` over ``value_names``."""
    index = {name: j for j, name in enumerate(value_names)}
    out = np.zeros((attributes.n_items, len(value_names)))
    for row, k in zip(attributes.owners().tolist(), attributes.values.tolist(), strict=True):
        name = attributes.value_names[k]
        if name in index:
            out[row, index[name]] = 1.0
    return out


def test_normal_matrix_is_xtx_whatever_the_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    attrs = random_catalogue(300, 40, seed=1)
    column = feature_columns(attrs.value_items())
    features = column[attrs.values]
    keep = features >= 0
    k = int(column.max()) + 1
    x = np.zeros((attrs.n_items, k))
    x[attrs.owners()[keep], features[keep]] = 1.0
    whole = normal_matrix(attrs.owners()[keep], features[keep], k, attrs.n_items)
    monkeypatch.setattr(attribute_map, "CHUNK_PAIRS", 7)  # a few items per chunk
    chunked = normal_matrix(attrs.owners()[keep], features[keep], k, attrs.n_items)
    np.testing.assert_array_equal(whole, x.T @ x)
    np.testing.assert_array_equal(chunked, x.T @ x)


def test_feature_columns_keep_the_most_carried_values_seen_twice() -> None:
    carriers = np.array([5, 1, 9, 2, 9, 0, 3])
    assert feature_columns(carriers, max_values=3).tolist() == [0, -1, 1, -1, 2, -1, -1]
    assert feature_columns(carriers, max_values=1).tolist() == [-1, -1, 0, -1, -1, -1, -1]  # tie: lower index
    assert feature_columns(carriers).tolist() == [0, -1, 1, 2, 3, -1, 4]  # columns in value order


def test_fit_and_apply_match_the_closed_form_ridge_solution() -> None:
    attrs = random_catalogue(400, 30, seed=2)
    rng = np.random.default_rng(3)
    targets = rng.normal(size=(400, 5))
    m = AttributeMap.fit(attrs, [targets.astype(np.float32)], ridges=(4.0,))
    names = [attrs.value_names[v] for v in np.argsort(m.column) if m.column[v] >= 0]
    x = dense(attrs, names)
    xc, tc = x - x.mean(axis=0), targets - targets.mean(axis=0)
    weights = np.linalg.solve(xc.T @ xc + 4.0 * np.eye(x.shape[1]), xc.T @ tc)
    fresh = random_catalogue(50, 30, seed=9)
    rows, (placed,) = m.apply(fresh)
    expected = (dense(fresh, names) - x.mean(axis=0)) @ weights + targets.mean(axis=0)
    np.testing.assert_allclose(placed, expected[rows], rtol=1e-4, atol=1e-4)


def test_a_planted_linear_map_is_recovered_and_unknown_values_place_nothing() -> None:
    attrs = random_catalogue(2000, 25, seed=4)
    rng = np.random.default_rng(5)
    per_value = rng.normal(size=(len(attrs.value_names), 8))
    truth = dense(attrs, attrs.value_names) @ per_value + 0.5
    m = AttributeMap.fit(attrs, [truth.astype(np.float32)], ridges=(0.01,))
    fresh = ItemAttributes.from_mapping(
        {"new": {"tag": ["t0", "t3"], "kind": "k1"}, "stranger": {"colour": "mauve"}, "bare": {}}
    )
    rows, (placed,) = m.apply(fresh.with_vocabulary([], attrs.value_names))
    assert rows.tolist() == [0]  # "stranger" has no value the map knows, "bare" none at all
    named = {name: j for j, name in enumerate(attrs.value_names)}
    want = per_value[[named["tag=t0"], named["tag=t3"], named["kind=k1"]]].sum(axis=0) + 0.5
    np.testing.assert_allclose(placed[0], want, atol=0.05)


def test_the_ridge_weight_is_chosen_on_held_out_items() -> None:
    attrs = random_catalogue(3000, 25, seed=6)
    rng = np.random.default_rng(7)
    exact = dense(attrs, attrs.value_names) @ rng.normal(size=(len(attrs.value_names), 4))
    assert AttributeMap.fit(attrs, [exact.astype(np.float32)]).ridge == RIDGES[0]  # nothing to shrink
    noise = rng.normal(size=exact.shape).astype(np.float32)
    assert AttributeMap.fit(attrs, [noise]).ridge >= 300  # values explain nothing: shrink
    few = random_catalogue(40, 25, seed=8)  # 4 items to hold out: too few to choose
    assert AttributeMap.fit(few, [np.ones((40, 2), np.float32)]).ridge == DEFAULT_RIDGE


def test_serving_places_a_new_item_of_any_model_beside_its_cluster() -> None:
    """iALS learned no attribute embeddings: the map, fitted on its rows, places new items by their values."""
    model = registry.build_preset("ials", seed=1, device="cpu", threads=1, dim=16, epochs=8)
    model.fit(planted())
    catalogue = ItemAttributes.from_mapping(
        {f"i{c}_{k}": {"cat": f"c{c}", "noise": f"n{k % 3}"} for c in range(CLUSTERS) for k in range(PER_CLUSTER + 1)}
    )
    placer = AttributeVectors.of(model, catalogue)
    new = catalogue.align([f"i{c}_{PER_CLUSTER}" for c in range(CLUSTERS)])  # never in any event
    placed = placer.place(new)
    assert placed.rows.tolist() == list(range(CLUSTERS))
    near = np.argsort(-(placed.sim @ model.similar_vectors().T), axis=1)[:, :5]
    same = [model.item_ids[j].split("_")[0] == f"i{c}" for c in range(CLUSTERS) for j in near[c]]
    assert np.mean(same) > 0.9
    np.testing.assert_allclose(np.linalg.norm(placed.sim, axis=1), 1.0, rtol=1e-5)
    index = model.item_index()
    users = [np.array([index[f"i{c}_{k}"] for k in range(3)]) for c in range(CLUSTERS)]
    query = model.query_vectors([History(items, np.ones(3, np.float32)) for items in users])
    assert (query @ placed.rec.T).argmax(axis=1).tolist() == list(range(CLUSTERS))
