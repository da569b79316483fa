"""The CUDA-graph SGD step (``trainer.models.sgns_graph``) run eagerly on the CPU.

On CUDA item2vec replays one captured step per batch; the captured body is
the code below with ``capture=False``. These tests hold that body to the
eager epoch (``sgns.train_epoch``) batch for batch, so CI checks what the GPU
replays; ``tests/test_cuda.py`` checks the capture itself where a GPU is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models import sgns
from trainer.models.sgns import StepSizes, Workspace
from trainer.models.sgns_graph import StepGraph

CPU = torch.device("cpu")
N_ROWS, DIM, N_C = 30, 8, 3
SIZES = StepSizes(negatives=2, shared=8, group=8, batch=32, neg_cap=0.5, cap=2.0)


def _plan(seed: int, n_t: int) -> sgns.EpochPlan:
    rng = np.random.default_rng(seed)
    negs = rng.integers(0, N_ROWS, (n_t // SIZES.group, SIZES.shared))
    return sgns.plan_epoch(rng.integers(0, N_ROWS, n_t), rng.integers(0, N_ROWS, (n_t, N_C)), negs, SIZES, CPU)


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(N_ROWS, DIM, generator=gen) * 0.3, torch.randn(N_ROWS, DIM, generator=gen) * 0.3


@pytest.mark.parametrize(("n_t", "unroll"), [(304, 4), (288, 4), (256, 4), (112, 4), (16, 4), (112, 1)])
def test_graph_body_trains_like_the_eager_epoch_over_two_epochs(n_t: int, unroll: int) -> None:
    """Full batches in runs of ``unroll`` (plus a shorter run), then a partial batch or none, loss sampled alike."""
    plans = [_plan(1, n_t), _plan(2, n_t)]
    lrs = [(0.05, 0.03), (0.03, 0.01)]
    win, wout = _tables()
    ws = Workspace(SIZES.batch_targets, N_C, SIZES, DIM, CPU)
    eager_losses = [
        sgns.train_epoch(win, wout, p, r, SIZES, [ws], loss_every=unroll) for p, r in zip(plans, lrs, strict=True)
    ]
    g_in, g_out = _tables()
    graph = StepGraph(
        g_in,
        g_out,
        _plan(1, n_t),
        SIZES,
        Workspace(SIZES.batch_targets, N_C, SIZES, DIM, CPU),
        capture=False,
        unroll=unroll,
    )
    graph_losses = [float(graph.run_epoch(p, r)) for p, r in zip(plans, lrs, strict=True)]
    torch.testing.assert_close(g_in, win, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_out, wout, atol=1e-6, rtol=1e-5)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-5)
    assert not torch.equal(win, _tables()[0])  # the epochs did train
    assert int(graph.step) == n_t // SIZES.batch_targets  # the device counter walked every full batch


def test_each_epochs_plan_is_packed_into_the_fixed_rows() -> None:
    plans = [_plan(1, 112), _plan(5, 112)]
    win, wout = _tables()
    graph = StepGraph(win, wout, plans[0], SIZES, Workspace(SIZES.batch_targets, N_C, SIZES, DIM, CPU), capture=False)
    graph.run_epoch(plans[1], (0.05, 0.01))
    torch.testing.assert_close(graph.packed[0][:, :32], plans[1].targets[:96].view(3, 32))
    torch.testing.assert_close(graph.packed[1][:, :32], plans[1].n_scale[:96].view(3, 32))
    torch.testing.assert_close(graph.buffers.targets, plans[1].targets[64:96])  # the last full batch's row
