"""Skip-gram negative-sampling kernel: manual mini-batch SGD on two embedding tables.

Why not autograd and an optimizer: a sparse-Adam PyTorch SGNS ran at 0.27M
pairs/s on the 2-core build machine against gensim's 3M. The SGNS update is a
few lines of algebra, so it is written out here and applied in place with
``index_add_``: no graph, no optimizer state, no per-pair Python.

What makes it fast on a CPU (each measured with torch's profiler):

* **Targets carry their contexts.** Every target comes with ``C`` context
  items (Lit2Vec2's sampling), so its input row is gathered, scored against
  the negatives and scattered back once per ``C`` pairs.
* **Shared negatives.** Each group of ``group`` targets shares one set of
  ``N`` negatives: scoring them is one batched matmul instead of ``B * k``
  gathers. Each negative's gradient is weighted by ``C * negatives / N`` so
  every pair still receives, in expectation, ``negatives`` negatives' worth of
  push-away, as in word2vec.
* **Sorted scatters.** ``index_add_`` on CPU is ~2.5x faster with sorted
  indices, so ``plan_epoch`` sorts each batch's targets, and the context
  gradients are built directly in context-sorted order (one extra gather).
* **No allocation in the loop.** Fresh multi-MB tensors cost page faults on
  every batch; all intermediates live in a ``Workspace`` reused by ``out=``.
* The epoch's pairs, orderings and negatives are prepared in a few vectorised
  calls, so the loop body is a fixed sequence of ~20 tensor kernels.

The learning rate is folded into the (small) score gradients, so the big
gradient rows come out pre-scaled and ``index_add_`` needs no ``alpha``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.interactions import FloatArray, IntArray


@dataclass(frozen=True)
class StepSizes:
    """SGD settings shared by every batch."""

    negatives: int  # word2vec's k: negatives' worth of gradient per pair
    shared: int  # N: negatives drawn per group of targets
    group: int  # targets sharing one negative set
    batch: int  # targets per batch (a multiple of ``group`` is used)
    neg_cap: float = 1.0  # max draws' worth of step per negative row and group of targets (0 = no cap)
    cap: float = 0.0  # max occurrences' worth of step per target / context row and batch (0 = no cap)

    @property
    def batch_targets(self) -> int:
        return max(self.group, self.batch // self.group * self.group)


@dataclass(frozen=True)
class PlanTensors:
    """The tensors SGD steps read (all on the device); ``EpochPlan`` holds an epoch's, ``StepBatch`` a batch's.

    Per target (T,): ``targets``, sorted inside each batch. Per pair (T*C,),
    target-major: ``t_rep`` (each target repeated C times) and ``contexts``.
    Per pair, context-sorted inside each batch: ``ctx_sorted`` (the context
    rows), ``ctx_order`` (the pair's target-major position in its batch) and
    ``ctx_target`` (its target's position in the batch). ``negs`` the
    groups' negative rows; ``n_scale`` their collision factors.
    """

    targets: torch.Tensor
    t_rep: torch.Tensor
    contexts: torch.Tensor
    ctx_sorted: torch.Tensor
    ctx_order: torch.Tensor
    ctx_target: torch.Tensor
    negs: torch.Tensor
    n_scale: torch.Tensor
    t_scale: torch.Tensor
    t_scale_rep: torch.Tensor
    c_scale: torch.Tensor


@dataclass(frozen=True)
class EpochPlan(PlanTensors):
    """One epoch's batches, laid out for ``sgd_step``; ``negs`` is (n_groups, N)."""


def collision_scale(batch_of: IntArray, rows: IntArray, cap: float) -> FloatArray:
    """Per-occurrence factor ``min(1, cap / count)``, count = occurrences of the row in its batch.

    ``(batch_of, rows)`` must be sorted. A negative shared by a group
    receives the summed, same-signed push of every target in the group; one
    drawn several times per group gets several such pushes in one go where
    sequential SGD would have seen its gradient shrink along the way. Measured
    on ML-100K with log-uniform negatives (the top item is ~9% of draws):
    uncapped, batches of 1024+ targets diverge at word2vec's learning rate;
    capped at one draw's worth per group, they train like batches of 256.
    """
    if cap <= 0 or not len(rows):
        return np.ones(len(rows), np.float32)
    new = np.r_[True, (rows[1:] != rows[:-1]) | (batch_of[1:] != batch_of[:-1])]
    counts = np.diff(np.r_[np.flatnonzero(new), len(rows)])
    return np.repeat(np.minimum(1.0, cap / counts), counts).astype(np.float32)


def _sort_in_batches(batch_of: IntArray, rows: IntArray, n_rows: int) -> IntArray:
    """Permutation ordering ``rows`` by (batch, row): one int64 argsort, ~3x faster than lexsort."""
    return np.argsort(batch_of * n_rows + rows)


def plan_epoch(
    targets: IntArray, contexts: IntArray, negs: IntArray, sizes: StepSizes, device: torch.device
) -> EpochPlan:
    """Lay out one epoch for ``sgd_step``: batch-wise sorted targets, context order, collision factors."""
    n_t, n_c = contexts.shape
    bt = sizes.batch_targets
    n_rows = int(max(targets.max(initial=0), contexts.max(initial=0), negs.max(initial=0))) + 1
    batch_of = np.arange(n_t, dtype=np.int64) // bt
    order = _sort_in_batches(batch_of, targets, n_rows)
    targets, contexts = targets[order], contexts[order]
    flat = contexts.reshape(-1)
    pair_batch = np.repeat(batch_of, n_c)
    c_order = _sort_in_batches(pair_batch, flat, n_rows)  # global pair positions, context-sorted per batch
    local = c_order - pair_batch[c_order] * bt * n_c  # position inside its batch's (T_b * C) block
    negs = np.sort(negs, axis=1)
    neg_batch = np.repeat(np.arange(len(negs), dtype=np.int64) * sizes.group // bt, negs.shape[1])
    n_order = _sort_in_batches(neg_batch, negs.reshape(-1), n_rows)
    n_scale = np.empty(negs.size, np.float32)
    n_scale[n_order] = collision_scale(
        neg_batch[n_order], negs.reshape(-1)[n_order], sizes.neg_cap * (bt // sizes.group)
    )
    t_scale = collision_scale(batch_of, targets, sizes.cap)
    c_scale = collision_scale(pair_batch[c_order], flat[c_order], sizes.cap)
    arrays = (
        targets,
        np.repeat(targets, n_c),
        flat,
        flat[c_order],
        local,
        local // n_c,
        negs,
        n_scale,
        t_scale,
        np.repeat(t_scale, n_c),
        c_scale,
    )
    return EpochPlan(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays))


def pad_to_groups(
    targets: IntArray, contexts: IntArray, group: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Repeat a few random targets (with their contexts) so that whole groups cover the epoch.

    Groups must be equal-sized for the batched negative matmul; repeating
    ``< group`` random targets is cheaper and less biased than a ragged group.
    """
    extra = -len(targets) % group
    if not extra:
        return targets, contexts
    pick = rng.integers(0, len(targets), extra)
    return np.concatenate([targets, targets[pick]]), np.concatenate([contexts, contexts[pick]])


class Workspace:
    """Preallocated intermediates for batches of up to ``targets`` targets."""

    def __init__(self, targets: int, n_c: int, sizes: StepSizes, dim: int, device: torch.device) -> None:
        groups = -(-targets // sizes.group)

        def buf(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=torch.float32, device=device)

        self.wt = buf(targets, dim)
        self.wt_rep = buf(targets * n_c, dim)
        self.wc = buf(targets * n_c, dim)
        self.wn = buf(groups * sizes.shared, dim)
        self.pos = buf(targets * n_c)
        self.neg = buf(targets * sizes.shared)
        self.grad_t = buf(targets, dim)
        self.grad_n = buf(groups * sizes.shared, dim)
        self.vals = buf(targets * n_c)


@dataclass(frozen=True)
class StepBatch(PlanTensors):
    """One batch's slice of an ``EpochPlan``, ``negs`` flattened to (G*N,).

    ``ctx_order`` and ``ctx_target`` are positions inside the batch, so a
    batch's tensors mean the same wherever they sit (``sgns_graph`` gathers
    them into fixed buffers).
    """


def batch_of(plan: EpochPlan, span: tuple[int, int], group: int) -> StepBatch:
    """Targets ``span[0]:span[1]`` (whole groups) of ``plan`` as a ``StepBatch`` of views."""
    lo, hi = span
    n_c = int(plan.contexts.shape[0]) // int(plan.targets.shape[0])
    n_n = int(plan.negs.shape[1])
    t, p, g = slice(lo, hi), slice(lo * n_c, hi * n_c), slice(lo // group, hi // group)
    return StepBatch(
        plan.targets[t],
        plan.t_rep[p],
        plan.contexts[p],
        plan.ctx_sorted[p],
        plan.ctx_order[p],
        plan.ctx_target[p],
        plan.negs[g].reshape(-1),
        plan.n_scale[g.start * n_n : g.stop * n_n],
        plan.t_scale[t],
        plan.t_scale_rep[p],
        plan.c_scale[p],
    )


def sgd_step(
    win: torch.Tensor,
    wout: torch.Tensor,
    plan: EpochPlan,
    span: tuple[int, int],
    lr: float,
    sizes: StepSizes,
    ws: Workspace,
    loss_groups: int,
) -> torch.Tensor | None:
    """``apply_step`` on targets ``span[0]:span[1]`` (whole groups) of ``plan``."""
    return apply_step(win, wout, batch_of(plan, span, sizes.group), lr, sizes, ws, loss_groups)


def apply_step(
    win: torch.Tensor,
    wout: torch.Tensor,
    b: StepBatch,
    lr: float | torch.Tensor,
    sizes: StepSizes,
    ws: Workspace,
    loss_groups: int,
) -> torch.Tensor | None:
    """One batch; returns the loss sum of its first ``loss_groups`` groups (a 0-dim tensor, no sync; None at 0).

    The loss is only monitored (divergence check, reporting): training samples it on one group, since
    ``softplus`` over every negative cost ~10% of a CPU epoch. Loss per target = sum_c softplus(-t.c)
    + w * sum_n softplus(t.n), w = C * negatives / N; the step is applied in place to ``win`` and
    ``wout`` (one tensor when tied); all gathers precede the first scatter (one consistent snapshot).
    ``lr`` may be a one-element device tensor (the CUDA-graph step reads it from the device).
    """
    n_t, n_p, d, n_n = int(b.targets.shape[0]), int(b.contexts.shape[0]), int(win.shape[1]), sizes.shared
    n_c, g = n_p // n_t, n_t // sizes.group
    wt, wt_rep, wc, wn = _gather_rows(win, wout, b, ws, g, n_n)
    pos = torch.sum(wt_rep.mul_(wc), 1, out=ws.pos[:n_p])  # (P,)  (wt_rep is free after this)
    neg = torch.bmm(wt.view(g, n_t // g, d), wn.transpose(1, 2), out=ws.neg[: n_t * n_n].view(g, n_t // g, n_n))
    weight = n_c * sizes.negatives / n_n
    head = min(loss_groups, g)
    loss = _loss(pos[: head * (n_t // g) * n_c], neg[:head], weight) if head else None
    gpos = torch.sigmoid_(pos).sub_(1.0).mul_(-lr)  # (P,) -lr * dloss/dpos
    gneg = torch.sigmoid_(neg).mul_(-lr * weight)  # (G, T/G, N) -lr * dloss/dneg
    grad_t = torch.bmm(gneg, wn, out=ws.grad_t[:n_t].view(g, n_t // g, d)).view(n_t, d)  # (T, d) from negatives
    grad_t.mul_(b.t_scale.unsqueeze(1))
    grad_n = torch.bmm(gneg.transpose(1, 2), wt.view(g, n_t // g, d), out=ws.grad_n[: g * n_n].view(g, n_n, d))
    grad_n.mul_(b.n_scale.view(g, n_n, 1))
    vals = torch.index_select(gpos, 0, b.ctx_order, out=ws.vals[:n_p]).mul_(b.c_scale)
    grad_c = torch.index_select(wt, 0, b.ctx_target, out=ws.wt_rep[:n_p]).mul_(vals.unsqueeze(1))
    wc.mul_(gpos.mul_(b.t_scale_rep).unsqueeze(1))  # (P, d) positive-pair step for the targets
    _scatter_steps(win, wout, b, grad_t, wc, grad_c, grad_n.view(-1, d))
    return loss


def _gather_rows(
    win: torch.Tensor, wout: torch.Tensor, b: StepBatch, ws: Workspace, g: int, n_n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's rows, copied into ``ws``: targets (T, d), targets per pair (P, d), contexts (P, d), negatives
    (G, N, d)."""
    n_t, n_p, d = int(b.targets.shape[0]), int(b.contexts.shape[0]), int(win.shape[1])
    wt = torch.index_select(win, 0, b.targets, out=ws.wt[:n_t])  # (T, d)
    wt_rep = torch.index_select(win, 0, b.t_rep, out=ws.wt_rep[:n_p])  # (P, d)
    wc = torch.index_select(wout, 0, b.contexts, out=ws.wc[:n_p])  # (P, d)
    wn = torch.index_select(wout, 0, b.negs, out=ws.wn[: g * n_n]).view(g, n_n, d)  # (G, N, d)
    return wt, wt_rep, wc, wn


def _scatter_steps(
    win: torch.Tensor,
    wout: torch.Tensor,
    b: StepBatch,
    grad_t: torch.Tensor,
    step_t: torch.Tensor,
    grad_c: torch.Tensor,
    grad_n: torch.Tensor,
) -> None:
    """Add the batch's steps in place: to its targets' and pairs' input rows, its contexts' and negatives' output
    rows."""
    win.index_add_(0, b.targets, grad_t)
    win.index_add_(0, b.t_rep, step_t)
    wout.index_add_(0, b.ctx_sorted, grad_c)
    wout.index_add_(0, b.negs, grad_n)


def _loss(pos: torch.Tensor, neg: torch.Tensor, weight: float) -> torch.Tensor:
    softplus = torch.nn.functional.softplus
    return softplus(-pos).sum() + weight * softplus(neg).sum()


def train_epoch(
    win: torch.Tensor,
    wout: torch.Tensor,
    plan: EpochPlan,
    lrs: tuple[float, float],
    sizes: StepSizes,
    spaces: list[Workspace],
    loss_every: int = 4,
) -> float:
    """SGD over one planned epoch; returns the mean loss per pair (sampled on the first group of every
    ``loss_every``-th batch).

    The learning rate falls linearly from ``lrs[0]`` to ``lrs[1]`` over the
    epoch (word2vec's schedule). With several workspaces, that many threads
    take alternate batches Hogwild-style (torch releases the GIL inside each
    kernel); one workspace is the deterministic loop (its kernels may still
    use torch's intra-op threads, which give the same bits).
    """
    n_t = int(plan.targets.shape[0])
    n_c = int(plan.contexts.shape[0]) // max(n_t, 1)
    bt = sizes.batch_targets
    starts = list(range(0, n_t, bt))
    totals = [torch.zeros((), device=win.device) for _ in spaces]
    counted = sizes.group * n_c * len(starts[::loss_every])

    def work(worker: int) -> None:
        for k in range(worker, len(starts), len(spaces)):
            lo = starts[k]
            lr = lrs[0] + (lrs[1] - lrs[0]) * lo / max(n_t, 1)
            span = (lo, min(n_t, lo + bt))
            loss = sgd_step(win, wout, plan, span, lr, sizes, spaces[worker], int(k % loss_every == 0))
            if loss is not None:
                totals[worker].add_(loss)

    _run_workers(work, len(spaces))
    return float(sum(totals)) / max(counted, 1)


def _run_workers(work: Callable[[int], None], n: int) -> None:
    """``work(0)`` on this thread when ``n`` is 1, else ``work(w)`` for every ``w < n`` on threads of their own."""
    if n == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
