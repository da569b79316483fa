"""Epoch planning for skip-gram SGD on the training device, in torch.

``trainer.sampling`` + ``trainer.models.sgns.plan_epoch`` draw and lay out an
epoch with numpy on the host: right for a CPU fit, where the host *is* the
device. On a GPU the SGD kernels run tens of millions of pairs per second,
and host-side planning (shuffles, argsorts of every pair, inverse-CDF draws)
would starve them. This module does the same work with torch ops on the
device the tables live on, with a torch generator:

* pairs: every positive of a user with ``n >= 2`` items is a target once,
  partners ``(slot + 1 + k) mod n`` with ``k`` uniform in ``[0, n - 1)``, as
  ``trainer.sampling.sample_pairs``;
* negatives by inverse-CDF ``searchsorted``, as ``NegativeSampler``;
* the same ``EpochPlan`` as ``plan_epoch`` (batch-sorted rows and collision
  factors), so ``sgd_step`` runs unchanged.

The distributions are the host planner's; the random streams are not (torch
versus numpy generators), so a CUDA fit and a CPU fit of the same seed give
different, equally good tables. On the CPU the host planner stays the
default: it is the one tuned for it (``Item2Vec(plan="device")`` forces this
one, which the tests use to check both planners agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.models.sgns import EpochPlan, StepSizes
from trainer.sampling import UserSets


@dataclass(frozen=True)
class DeviceSets:
    """Per target slot (users with >= 2 items only): item row, user start and size, slot in the user."""

    items: torch.Tensor  # (P,) every user's distinct positive rows, CSR order
    slots: torch.Tensor  # (T,) positions in ``items`` that are targets
    start: torch.Tensor  # (T,) their user's first position
    size: torch.Tensor  # (T,) their user's item count

    @classmethod
    def build(cls, sets: UserSets, device: torch.device) -> DeviceSets:
        lens = sets.lengths()
        owners = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
        slots = np.flatnonzero(lens[owners] >= 2)
        arrays = (sets.items, slots, sets.indptr[owners[slots]], lens[owners[slots]])
        return cls(*(torch.from_numpy(np.ascontiguousarray(a, np.int64)).to(device) for a in arrays))

    @property
    def n_targets(self) -> int:
        return int(self.slots.shape[0])


def sample_pairs(
    sets: DeviceSets, context: int, group: int, gen: torch.Generator, epochs: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E*T',) shuffled targets and (E*T', context) partners for ``epochs`` epochs, epoch after epoch; each
    epoch's T' is padded up to whole groups by repeats."""
    n_t, dev = sets.n_targets, sets.items.device
    keys = torch.rand((epochs, n_t), generator=gen, device=dev, dtype=torch.float64)
    pick = torch.argsort(keys, dim=1)  # an independent shuffle per epoch, all in one kernel
    extra = -n_t % group
    if extra:  # repeat a few random targets so every group is full (as ``sgns.pad_to_groups``)
        more = torch.randint(0, n_t, (epochs, extra), generator=gen, device=dev)
        pick = torch.cat([pick, more], dim=1)
    pick = pick.reshape(-1)
    size = sets.size[pick]
    slot = sets.slots[pick] - sets.start[pick]
    k = (torch.rand((len(pick), context), generator=gen, device=dev) * (size - 1)[:, None]).long()
    k = torch.minimum(k, (size - 2)[:, None])  # float rounding must never reach n - 1 (the target itself)
    partner = sets.start[pick, None] + (slot[:, None] + 1 + k) % size[:, None]
    return sets.items[sets.slots[pick]], sets.items[partner]


def draw_negatives(cdf: torch.Tensor, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Item rows drawn by inverse CDF (``cdf`` normalised, float64, on the device)."""
    u = torch.rand(shape, generator=gen, device=cdf.device, dtype=torch.float64)
    return torch.clamp(torch.searchsorted(cdf, u, right=True), max=len(cdf) - 1)


def collision_scale(batch_of: torch.Tensor, rows: torch.Tensor, cap: float) -> torch.Tensor:
    """``sgns.collision_scale`` in torch: ``min(1, cap / count)`` per occurrence, inputs sorted.

    Runs are counted with a scatter, not ``nonzero``: no host sync, so the
    host can queue the next kernels while the GPU works.
    """
    n = int(rows.shape[0])
    if cap <= 0 or not n:
        return torch.ones(n, dtype=torch.float32, device=rows.device)
    new = torch.ones(n, dtype=torch.long, device=rows.device)
    new[1:] = ((rows[1:] != rows[:-1]) | (batch_of[1:] != batch_of[:-1])).long()
    run = torch.cumsum(new, 0).sub_(1)  # (n,) run of each occurrence
    counts = torch.zeros(n, dtype=torch.float32, device=rows.device).index_add_(
        0, run, torch.ones(n, dtype=torch.float32, device=rows.device)
    )
    return torch.clamp(cap / counts[run], max=1.0)


def _sort_in_batches(batch_of: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    return torch.sort(batch_of * n_rows + rows, stable=True).indices


def plan_epoch(
    targets: torch.Tensor, contexts: torch.Tensor, negs: torch.Tensor, sizes: StepSizes, n_rows: int
) -> EpochPlan:
    """``sgns.plan_epoch`` on device tensors (``n_rows`` bounds every row index)."""
    return plan_epochs(targets, contexts, negs, sizes, n_rows, 1)[0]


def plan_epochs(
    targets: torch.Tensor, contexts: torch.Tensor, negs: torch.Tensor, sizes: StepSizes, n_rows: int, epochs: int
) -> list[EpochPlan]:
    """``epochs`` equal epochs, concatenated in ``targets``/``contexts``/``negs``, laid out in one pass.

    Each epoch is batched from its own start (its last batch may be short),
    exactly as ``plan_epoch`` would lay it out alone; doing them together
    costs one set of kernel launches instead of one per epoch.
    """
    n_all, n_c = contexts.shape
    n_t, bt, dev = n_all // epochs, sizes.batch_targets, targets.device
    per_epoch = -(-n_t // bt)  # batches per epoch
    at = torch.arange(n_all, device=dev)
    batch_of = at // n_t * per_epoch + at % n_t // bt
    start = at - at % n_t % bt  # first target of each target's batch
    order = _sort_in_batches(batch_of, targets, n_rows)
    targets, flat = targets[order], contexts[order].reshape(-1)
    pair_batch = torch.repeat_interleave(batch_of, n_c)
    c_order = _sort_in_batches(pair_batch, flat, n_rows)
    local = c_order - torch.repeat_interleave(start, n_c)[c_order] * n_c  # position inside its batch's pairs
    negs, n_scale = _plan_negatives(negs, sizes, n_rows, epochs, per_epoch)
    t_scale = collision_scale(batch_of, targets, sizes.cap)
    c_scale = collision_scale(pair_batch[c_order], flat[c_order], sizes.cap)
    whole = (
        targets,
        torch.repeat_interleave(targets, n_c),
        flat,
        flat[c_order],
        local,
        local // n_c,
        negs,
        n_scale,
        t_scale,
        torch.repeat_interleave(t_scale, n_c),
        c_scale,
    )
    return [_epoch_of(whole, e, epochs) for e in range(epochs)]


def _plan_negatives(
    negs: torch.Tensor, sizes: StepSizes, n_rows: int, epochs: int, per_epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's negatives sorted, and their collision factors (``neg_cap`` draws' worth per group of targets)."""
    bt, dev = sizes.batch_targets, negs.device
    negs = torch.sort(negs, dim=1).values
    neg_flat = negs.reshape(-1)
    groups = torch.arange(len(negs), device=dev)
    per_group = len(negs) // epochs
    neg_batch = torch.repeat_interleave(
        groups // per_group * per_epoch + groups % per_group * sizes.group // bt, negs.shape[1]
    )
    n_order = _sort_in_batches(neg_batch, neg_flat, n_rows)
    n_scale = torch.empty(neg_flat.shape[0], dtype=torch.float32, device=dev)
    n_scale[n_order] = collision_scale(neg_batch[n_order], neg_flat[n_order], sizes.neg_cap * (bt // sizes.group))
    return negs, n_scale


def _epoch_of(whole: tuple[torch.Tensor, ...], epoch: int, epochs: int) -> EpochPlan:
    """Epoch ``epoch``'s share (a contiguous ``1 / epochs`` of every field) as an ``EpochPlan`` of views."""
    parts = []
    for tensor in whole:
        size = tensor.shape[0] // epochs
        parts.append(tensor[epoch * size : (epoch + 1) * size])
    return EpochPlan(*parts)
