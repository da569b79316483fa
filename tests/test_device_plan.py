"""The torch epoch planner (``trainer.models.device_plan``) against the numpy one, run on the CPU.

On CUDA item2vec draws and lays out its epochs with torch on the GPU; these
tests hold that planner to the host planner's contract on the CPU, so CI
checks the code the GPU runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from tests.test_item2vec import FAST, cluster_of, neighbours, planted
from trainer.models import device_plan, sgns
from trainer.models.device_plan import DeviceSets
from trainer.models.item2vec import Item2Vec
from trainer.models.sgns import StepSizes, Workspace, sgd_step
from trainer.sampling import UserSets

CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_device_pairs_stay_inside_each_users_set_cover_every_target_and_fill_groups() -> None:
    users = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3])
    items = np.array([5, 6, 7, 1, 2, 9, 0, 4, 4, 8, 3])  # user 2 has one item; user 3 repeats item 4
    sets = UserSets.build(users, items, n_users=4)
    on_dev = DeviceSets.build(sets, CPU)
    assert on_dev.n_targets == sets.n_pairs(1) == 9
    targets, contexts = device_plan.sample_pairs(on_dev, context=6, group=4, gen=_gen(1))
    assert len(targets) == 12 and contexts.shape == (12, 6)  # padded up to whole groups of 4
    assert sorted(targets[:9].tolist()) == list(range(9))  # each positive once, then the padding repeats
    assert not (contexts == targets[:, None]).any()
    owned = {u: set(items[users == u].tolist()) for u in range(4)}
    for t, row in zip(targets.tolist(), contexts.tolist(), strict=True):
        owner = next(u for u, s in owned.items() if t in s)
        assert set(row) <= owned[owner] - {t}


def test_device_pairs_cover_the_other_items_uniformly() -> None:
    on_dev = DeviceSets.build(UserSets.build(np.zeros(4, np.int64), np.arange(4), n_users=1), CPU)
    targets, contexts = device_plan.sample_pairs(on_dev, context=6000, group=1, gen=_gen(2))
    for t, row in zip(targets.tolist(), contexts.numpy(), strict=True):
        freq = np.bincount(row, minlength=4) / len(row)
        expected = np.where(np.arange(4) == t, 0.0, 1 / 3)
        assert np.abs(freq - expected).max() < 0.03  # ~5 standard errors at 6,000 draws


def test_device_negatives_follow_the_cdf() -> None:
    probs = np.array([0.5, 0.0, 0.3, 0.2])
    cdf = torch.from_numpy(np.cumsum(probs))
    draws = device_plan.draw_negatives(cdf, (200, 100), _gen(3)).numpy()
    freq = np.bincount(draws.ravel(), minlength=4) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert freq[1] == 0.0


def test_collision_scale_matches_the_host_version() -> None:
    rng = np.random.default_rng(4)
    batch = np.sort(rng.integers(0, 5, 500))
    rows = rng.integers(0, 20, 500)
    order = np.lexsort((rows, batch))
    batch, rows = batch[order], rows[order]
    for cap in (0.0, 1.0, 2.5):
        got = device_plan.collision_scale(torch.from_numpy(batch), torch.from_numpy(rows), cap)
        np.testing.assert_allclose(got.numpy(), sgns.collision_scale(batch, rows, cap), rtol=1e-6)


def _train_all_batches(plan: sgns.EpochPlan, sizes: StepSizes, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    win = torch.randn(n, d, generator=_gen(5)) * 0.3
    wout = torch.randn(n, d, generator=_gen(6)) * 0.3
    n_t = int(plan.targets.shape[0])
    ws = Workspace(sizes.batch_targets, int(plan.contexts.shape[0]) // n_t, sizes, d, CPU)
    for lo in range(0, n_t, sizes.batch_targets):
        sgd_step(win, wout, plan, (lo, min(n_t, lo + sizes.batch_targets)), 0.05, sizes, ws, 0)
    return win, wout


def test_device_plan_trains_exactly_like_the_host_plan_on_the_same_draws() -> None:
    rng = np.random.default_rng(7)
    n, d, n_t, n_c = 30, 8, 96, 3
    sizes = StepSizes(negatives=2, shared=8, group=8, batch=32, neg_cap=0.5, cap=2.0)
    targets, contexts = rng.integers(0, n, n_t), rng.integers(0, n, (n_t, n_c))
    negs = rng.integers(0, n, (n_t // sizes.group, sizes.shared))
    host = sgns.plan_epoch(targets, contexts, negs, sizes, CPU)
    dev = device_plan.plan_epoch(
        torch.from_numpy(targets), torch.from_numpy(contexts), torch.from_numpy(negs), sizes, n_rows=n
    )
    for name in ("targets", "ctx_sorted", "negs", "n_scale", "t_scale", "c_scale"):
        torch.testing.assert_close(getattr(dev, name), getattr(host, name), msg=name)
    for a, b in zip(_train_all_batches(dev, sizes, n, d), _train_all_batches(host, sizes, n, d), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def device_planned() -> Item2Vec:
    model = Item2Vec(plan="device", **FAST)
    model.fit(planted())
    return model


def test_item2vec_planned_on_the_device_learns_the_planted_clusters(device_planned: Item2Vec) -> None:
    ids = device_planned.item_ids
    near = neighbours(device_planned.similar_vectors(), 5)
    same = np.mean([cluster_of(ids[j]) == cluster_of(ids[i]) for i in range(len(ids)) for j in near[i]])
    assert same > 0.9  # random neighbours would be ~0.2


def test_device_plan_is_reproducible_per_seed_and_counts_every_pair() -> None:
    data = planted(n_users=50)
    settings: dict[str, Any] = {**FAST, "plan": "device", "epochs": 2}
    a, b, c = Item2Vec(**settings), Item2Vec(**settings), Item2Vec(**{**settings, "seed": 1})
    report = a.fit(data)
    b.fit(data)
    c.fit(data)
    np.testing.assert_array_equal(a.table("in"), b.table("in"))
    assert not np.array_equal(a.table("in"), c.table("in"))
    targets = 50 * 8
    padded = targets + (-targets % FAST["group"])
    assert report.samples == padded * 4 * 2


def test_unknown_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plan"):
        Item2Vec(plan="gpu")


def test_epochs_planned_together_equal_each_planned_alone() -> None:
    """``plan_epochs`` batches each epoch from its own start: 100 targets in batches of 32 leave a short 4th."""
    rng = np.random.default_rng(11)
    n, n_t, n_c, epochs = 30, 104, 3, 3
    sizes = StepSizes(negatives=2, shared=8, group=8, batch=32, neg_cap=0.5, cap=2.0)
    targets, contexts = rng.integers(0, n, epochs * n_t), rng.integers(0, n, (epochs * n_t, n_c))
    negs = rng.integers(0, n, (epochs * n_t // sizes.group, sizes.shared))
    together = device_plan.plan_epochs(
        torch.from_numpy(targets), torch.from_numpy(contexts), torch.from_numpy(negs), sizes, n, epochs
    )
    g = n_t // sizes.group
    for e, plan in enumerate(together):
        alone = device_plan.plan_epoch(
            torch.from_numpy(targets[e * n_t : (e + 1) * n_t]),
            torch.from_numpy(contexts[e * n_t : (e + 1) * n_t]),
            torch.from_numpy(negs[e * g : (e + 1) * g]),
            sizes,
            n,
        )
        for field in dataclasses.fields(alone):
            torch.testing.assert_close(getattr(plan, field.name), getattr(alone, field.name), msg=field.name)
