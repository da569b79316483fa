"""The CUDA training path: every model fits on the GPU, learns the planted structure, and its snapshot loads.

CI has no GPU, so these are skipped there; they run where torch sees a CUDA
device (the lent H100/H200, see docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import test_ials, test_item2vec, test_mf_ncf
from trainer.models.base import EmbeddingModel
from trainer.models.ials import ImplicitALS
from trainer.models.item2vec import Item2Vec
from trainer.snapshot import load_snapshot, save_snapshot

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (CI has none)")
GPU = {**test_item2vec.FAST, "device": "cuda"}


def _same_cluster_neighbours(model: EmbeddingModel) -> float:
    ids = model.item_ids
    near = test_item2vec.neighbours(model.similar_vectors(), 5)
    cluster = test_item2vec.cluster_of
    return float(np.mean([cluster(ids[j]) == cluster(ids[i]) for i in range(len(ids)) for j in near[i]]))


def test_item2vec_trains_on_the_gpu_with_gpu_planning_and_learns_the_clusters() -> None:
    model = Item2Vec(**GPU)
    report = model.fit(test_item2vec.planted())
    assert report.device.startswith("cuda") and report.samples_per_s > 0
    assert model._in is not None and model._in.is_cuda
    assert _same_cluster_neighbours(model) > 0.9


def test_item2vec_on_the_gpu_matches_the_cpu_fit_in_quality() -> None:
    """Same seed, different random streams and atomic scatter order: not bitwise equal, equally good."""
    data = test_item2vec.planted()
    gpu, cpu = Item2Vec(**GPU), Item2Vec(**test_item2vec.FAST)
    gpu_loss, cpu_loss = gpu.fit(data).losses[-1], cpu.fit(data).losses[-1]
    assert gpu_loss == pytest.approx(cpu_loss, rel=0.1)
    assert abs(_same_cluster_neighbours(gpu) - _same_cluster_neighbours(cpu)) < 0.05


def test_item2vec_replayed_from_a_cuda_graph_trains_like_the_eager_gpu_fit() -> None:
    """The captured step (``graph=True``, the default) against eager kernels: same plan stream, same quality."""
    data = test_item2vec.planted()
    graphed, eager = Item2Vec(**GPU), Item2Vec(**GPU, graph=False)
    g_loss, e_loss = graphed.fit(data).losses, eager.fit(data).losses
    assert g_loss[-1] == pytest.approx(e_loss[-1], rel=0.1) and g_loss[-1] < g_loss[0]
    assert _same_cluster_neighbours(graphed) > 0.9
    diff = np.abs(graphed.table("in") - eager.table("in")).max()  # atomics reorder the sums, nothing else
    assert diff < 0.05 * np.abs(eager.table("in")).max(), diff


def test_a_graph_capture_lets_another_thread_use_the_gpu_meanwhile() -> None:
    """``recd run`` serves and trains in one process: serving reads model rows off the GPU while a fit captures.

    (Like serving, the other thread draws nothing from the CUDA generator: PyTorch ties the default one to a
    capture, and a draw from another thread meanwhile fails, whatever the capture mode.)"""
    stop, errors, reads = threading.Event(), [], [0]
    table = torch.linspace(-1, 1, 5000 * 64, device="cuda").view(5000, 64)
    rows = torch.arange(0, 5000, 19, device="cuda")

    def serve_like() -> None:
        while not stop.is_set():
            try:
                table[rows].cpu()
                reads[0] += 1
            except Exception as exc:  # any failure is the finding
                errors.append(exc)
                return

    thread = threading.Thread(target=serve_like)
    thread.start()
    try:
        models = [Item2Vec(**{**GPU, "seed": seed}) for seed in range(3)]
        for model in models:
            model.fit(test_item2vec.planted())
    finally:
        stop.set()
        thread.join()
    assert not errors and reads[0] > 0
    assert all(_same_cluster_neighbours(m) > 0.9 for m in models)


def test_item2vec_warm_start_on_the_gpu_adds_items() -> None:
    first = Item2Vec(**GPU)
    first.fit(test_item2vec.planted(clusters=range(3)))
    second = Item2Vec(**GPU)
    report = second.fit(test_item2vec.planted(clusters=range(3, 5), prefix="j"), warm_from=first)
    assert report.new_items == 2 * test_item2vec.PER_CLUSTER
    assert second.item_ids[: first.n_items] == first.item_ids
    np.testing.assert_array_equal(second.table("in")[: first.n_items].shape, first.table("in").shape)


def test_ials_on_the_gpu_ranks_in_cluster_items_first() -> None:
    data = test_ials.planted()
    model = ImplicitALS(dim=8, epochs=6, reg=1.0, unobserved=0.1, device="cuda", threads=1)
    report = model.fit(data)
    assert report.device.startswith("cuda") and report.losses[-1] < report.losses[0]
    cpu = ImplicitALS(dim=8, epochs=6, reg=1.0, unobserved=0.1, device="cpu", threads=1)
    cpu.fit(data)
    np.testing.assert_allclose(model.index_vectors(), cpu.index_vectors(), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("loss", ["bpr", "bce"])
def test_mf_on_the_gpu_recovers_the_clusters(loss: str) -> None:
    model = test_mf_ncf.mf(loss=loss, device="cuda")
    assert model.fit(test_mf_ncf.planted()).device.startswith("cuda")
    for c in range(test_mf_ncf.CLUSTERS):
        assert test_mf_ncf.cluster_precision(model, c) >= 0.8, c


def test_ncf_on_the_gpu_recovers_the_clusters() -> None:
    model = test_mf_ncf.ncf(device="cuda")
    assert model.fit(test_mf_ncf.planted()).device.startswith("cuda")
    for c in range(test_mf_ncf.CLUSTERS):
        assert test_mf_ncf.cluster_precision(model, c, exact=True) >= 0.8, c


def test_a_gpu_trained_snapshot_loads_with_identical_vectors(tmp_path: Path) -> None:
    model = Item2Vec(**GPU)
    model.fit(test_item2vec.planted(n_users=60))
    save_snapshot(model, tmp_path / "v1", version="v1", data_watermark={}, metrics={}, parent_version=None)
    loaded, manifest = load_snapshot(tmp_path / "v1")
    assert manifest.model_type == "item2vec" and isinstance(loaded, Item2Vec)
    np.testing.assert_array_equal(loaded.index_vectors(), model.index_vectors())
