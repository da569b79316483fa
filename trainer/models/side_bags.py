"""EGES's item vector: a learned-weighted combination of an item's id row and its attribute values' rows.

For item ``v`` with attribute fields ``F(v)`` (the id counts as field 0, always
present unless dropped), with one logit ``a_f`` per field shared by all items::

    vec(v) = sum_{f in F(v)} softmax_{F(v)}(a)_f * mean_{x in values(v, f)} E[x]

so a field with several values (genres, actors) spreads its weight evenly over
them, and an item lacking a field renormalises over the fields it has. Without
the id term (``ids=None``, or ``keep`` false) the same formula gives the vector
of an item known by its attributes alone: the cold-start vector.

``Bags`` holds each row's pairs on the device; ``combine`` gathers the pairs of
any rows with a few tensor operations and one ``embedding_bag`` (sparse
gradients, so an optimiser step touches only the rows a batch used).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.attributes import ItemAttributes
from trainer.interactions import FloatArray

MIN_WEIGHT = 1e-12
"""Floor of a row's total field weight: a row with no attributes and no id part is a zero vector."""
CHUNK_ROWS = 1 << 16
"""Rows combined at a time when computing every item's vector (bounds the gathered pairs' memory)."""


class Bags:
    """The (field, value) pairs of every row of ``attrs`` as device tensors."""

    def __init__(self, attrs: ItemAttributes, device: torch.device) -> None:
        def put(array: np.ndarray) -> torch.Tensor:  # type: ignore[type-arg]
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        self.n_rows = attrs.n_items
        self.offsets = put(attrs.offsets)  # (n + 1,)
        self.lengths = put(attrs.lengths())  # (n,)
        self.values = put(attrs.values)  # (P,)
        self.fields = put(attrs.fields)  # (P,)
        self.share = put(field_shares(attrs))  # (P,) 1 / values of the pair's field in its item

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pairs of ``rows`` (R,): (bag of each pair (P',), pair index (P',), first pair of each bag (R,))."""
        lens = self.lengths[rows]
        first = torch.cumsum(lens, 0) - lens
        bag = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lens)
        pair = self.offsets[rows][bag] + torch.arange(len(bag), device=rows.device) - first[bag]
        return bag, pair, first


def field_shares(attrs: ItemAttributes) -> FloatArray:
    """(n_pairs,) float32 ``1 / (pairs of the same item and field)``: a field's values share its weight."""
    if not len(attrs.fields):
        return np.zeros(0, np.float32)
    key = attrs.owners() * max(len(attrs.field_names), 1) + attrs.fields
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return np.asarray(1.0 / counts[inverse], np.float32)


def combine(
    bags: Bags,
    rows: torch.Tensor,
    values: torch.Tensor,
    logits: torch.Tensor,
    ids: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """(R, dim) vectors of ``rows``: ``values`` (n_values, dim) the value rows, ``logits`` (1 + n_fields,) the
    field logits (0 = id), ``ids`` (n_rows, dim) the id rows or None (attributes only), ``keep`` (R,) bool: which
    rows keep their id part (None: all)."""
    bag, pair, first = bags.gather(rows)
    scale = torch.exp(logits - logits.max().detach())  # (1 + F,) softmax numerators
    w = scale[1 + bags.fields[pair]] * bags.share[pair]  # (P',)
    total = torch.zeros(len(rows), dtype=values.dtype, device=values.device).index_add(0, bag, w)  # (R,)
    w_id = None
    if ids is not None:
        w_id = scale[0].expand(len(rows)) if keep is None else scale[0] * keep.to(values.dtype)
        total = total + w_id
    total = total.clamp_min(MIN_WEIGHT)
    if len(pair):
        out = F.embedding_bag(
            bags.values[pair], values, first, mode="sum", per_sample_weights=w / total[bag], sparse=values.requires_grad
        )
    else:
        out = torch.zeros((len(rows), values.shape[1]), dtype=values.dtype, device=values.device)
    if ids is not None and w_id is not None:
        out = out + (w_id / total)[:, None] * F.embedding(rows, ids, sparse=ids.requires_grad)
    return out


def combine_all(bags: Bags, values: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor | None = None) -> FloatArray:
    """(n_rows, dim) float32 numpy: ``combine`` of every row, ``CHUNK_ROWS`` at a time, without gradients."""
    dim = int(values.shape[1])
    out = np.zeros((bags.n_rows, dim), np.float32)
    with torch.no_grad():
        for lo in range(0, bags.n_rows, CHUNK_ROWS):
            rows = torch.arange(lo, min(lo + CHUNK_ROWS, bags.n_rows), device=values.device)
            out[lo : lo + len(rows)] = combine(bags, rows, values, logits, ids).cpu().numpy()
    return out
