"""The autoencoder and Mult-VAE presets on planted data: clusters, serving split, warm start, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.planted import CLUSTERS, PER_CLUSTER, planted
from trainer.models import registry
from trainer.models.base import History
from trainer.models.vae import MultVAE

FAST = {"dim": 8, "hidden": 32, "epochs": 30, "batch": 32, "lr": 3e-3, "anneal_steps": 200}


def cluster(item: str) -> str:
    return item.split("_")[0]


@pytest.mark.parametrize("preset", ["autoencoder", "multvae"])
def test_new_history_is_served_from_its_cluster_and_fit_is_reproducible(preset: str) -> None:
    data = planted()
    model = registry.build_preset(preset, seed=1, device="cpu", threads=1, **FAST)
    model.fit(data)
    index = model.item_index()
    hits = []
    for c in range(CLUSTERS):
        seen = [index[f"i{c}_{k}"] for k in range(3)]
        query = model.query_vectors([History(np.array(seen), np.ones(3, np.float32))])
        scores = (query @ model.index_vectors().T)[0]
        scores[seen] = -np.inf
        top = np.argsort(-scores)[:5]
        hits += [cluster(model.item_ids[j]) == f"i{c}" for j in top]
    assert np.mean(hits) >= 0.9
    assert not model.query_vectors([History(np.zeros(0, np.int64), np.zeros(0, np.float32))]).any()
    again = registry.build_preset(preset, seed=1, device="cpu", threads=1, **FAST)
    again.fit(data)
    np.testing.assert_array_equal(again.index_vectors(), model.index_vectors())


def test_query_times_index_is_the_networks_output_logit() -> None:
    model = MultVAE(seed=0, device="cpu", threads=1, **{**FAST, "epochs": 2})
    model.fit(planted(n_users=40))
    assert model.net is not None
    hist = History(np.array([0, 2, 5]), np.ones(3, np.float32))
    with torch.no_grad():
        w = torch.full((3,), 1 / np.sqrt(3), dtype=torch.float32)
        code = model.net.encode(torch.tensor([0, 2, 5]), torch.tensor([0]), w)
        logits = model.net.out(model.net.hidden(code[:, : FAST["dim"]]))[0].numpy()
    got = (model.query_vectors([hist]) @ model.index_vectors().T)[0]
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-5)


def test_warm_start_keeps_known_rows_and_appends_new_items() -> None:
    old = MultVAE(seed=0, device="cpu", threads=1, **FAST)
    old.fit(planted())
    new = MultVAE(seed=0, device="cpu", threads=1, **{**FAST, "warm_epochs": 0})
    report = new.fit(planted(n_users=40, clusters=range(4, 6), seed=9), warm_from=old)
    assert new.item_ids[: old.n_items] == old.item_ids and report.new_items == 2 * PER_CLUSTER
    np.testing.assert_array_equal(new.index_vectors()[: old.n_items], old.index_vectors())  # 0 epochs: copied
    tuned = MultVAE(seed=0, device="cpu", threads=1, **{**FAST, "warm_epochs": 20})
    tuned.fit(planted(n_users=80, clusters=range(4, 6), seed=9), warm_from=old)
    sims = tuned.similar_vectors() @ tuned.similar_vectors().T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :5]
    ids = tuned.item_ids
    old_rows = range(old.n_items)
    assert np.mean([cluster(ids[j]) == cluster(ids[i]) for i in old_rows for j in near[i]]) > 0.8
    config, arrays = tuned.to_arrays()
    back = MultVAE.from_arrays(config, arrays, tuned.item_ids)
    np.testing.assert_array_equal(back.index_vectors(), tuned.index_vectors())
    with pytest.raises(TypeError):
        registry.build_preset("autoencoder", device="cpu").fit(planted(n_users=8), warm_from=old)
