"""What every recd model's training shares: device choice, seeds, thread caps,
NaN checks, the warm-start row mapping, and the capability of taking item
attributes (``TakesAttributes``: a model that has ``set_attributes`` is given
the attributes of the data's items before ``fit``; other models never see them).

Warm start keeps every item of the previous model (its row is copied and then
refined), appends rows for items the new data brings, and keeps old items the
new data no longer mentions, unchanged, so a fine-tune on recent data cannot
drop or scramble them. Rows are matched by external item id, never by position.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

from trainer.attributes import ItemAttributes
from trainer.interactions import FloatArray, IntArray


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
    return torch.device(name)


def seeded(seed: int, device: torch.device) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator on ``device`` for sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Cap torch's intra-op CPU threads for the duration of a fit, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_finite(name: str, value: float | torch.Tensor) -> None:
    """Raise (never publish garbage) when a loss or table holds NaN or inf."""
    # A tensor's sum is non-finite iff an entry is (or the sum overflows float32, itself no table to publish):
    # one pass, no (n, dim) mask.
    ok = bool(torch.isfinite(value.sum())) if isinstance(value, torch.Tensor) else bool(np.isfinite(value))
    if not ok:
        raise FloatingPointError(f"{name} is not finite; lower the learning rate or check the data")


@runtime_checkable
class TakesAttributes(Protocol):
    """A model that learns from item attributes: ``set_attributes`` before ``fit`` (any item order; items the
    data lacks are ignored). ``isinstance(model, TakesAttributes)`` tells a trainer whether to read them."""

    def set_attributes(self, attributes: ItemAttributes) -> None: ...


@dataclass(frozen=True)
class WarmPlan:
    """How a new fit's item table relates to the previous model's.

    ``item_ids``: previous items first (same order), then items new in the data;
    ``data_to_model``: for each of the data's item indices, its row in the new table;
    ``n_old``: rows copied from the previous model.
    """

    item_ids: list[str]
    data_to_model: IntArray
    n_old: int

    @property
    def n_new(self) -> int:
        return len(self.item_ids) - self.n_old


def plan_items(data_item_ids: Sequence[str], previous_ids: Sequence[str] | None) -> WarmPlan:
    """Merge the previous model's item ids with the data's (see ``WarmPlan``)."""
    ids = list(previous_ids or [])
    n_old = len(ids)
    if not n_old and len(set(data_item_ids)) == len(data_item_ids):  # a first fit: the data's order
        return WarmPlan(list(data_item_ids), np.arange(len(data_item_ids), dtype=np.int64), 0)
    index = dict(zip(ids, range(n_old), strict=True))
    rows = np.fromiter((index.get(item, -1) for item in data_item_ids), np.int64, len(data_item_ids))
    for k in np.flatnonzero(rows < 0).tolist():  # new items (all of them on a first fit), in data order
        item = data_item_ids[k]
        row = index.get(item)
        if row is None:
            row = index[item] = len(ids)
            ids.append(item)
        rows[k] = row
    return WarmPlan(ids, rows, n_old)


def grow_table(
    old: npt.NDArray[np.float32] | None, n_rows: int, dim: int, scale: float, rng: np.random.Generator
) -> FloatArray:
    """(n_rows, dim) float32: ``old`` rows on top, new rows ~ U(-scale, scale) (zeros, drawing nothing, at 0)."""
    out = np.zeros((n_rows, dim), np.float32)
    if scale:  # float32 draws in place: ~5x faster than float64 uniform + astype on big catalogues
        rng.random((n_rows, dim), dtype=np.float32, out=out)
        out *= 2 * scale
        out -= scale
    if old is not None and len(old):
        if old.shape[1] != dim:
            raise ValueError(f"warm start: previous model has dim {old.shape[1]}, this one {dim}")
        out[: len(old)] = old
    return out
