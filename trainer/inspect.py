"""Reading a trained model: its items' learned biases and each item's nearest neighbours by cosine.

``recd model inspect`` prints these for a saved model version. Biases exist for the presets that learn one
per item (``mf``'s ``EmbeddingDotBias`` of seed 003, ``ncf``): an item's bias is its popularity that the
taste vectors do not explain, so the highest are the items liked beyond their genre and the lowest the ones
shown and passed over. Neighbours are computed over the vectors the model serves similar items with
(``similar_vectors``), exactly, in blocks of rows (memory: block x items floats). Items are named by their
titles where a titles file or the item catalogue has them (``catalogue_titles``: a ``title`` or ``name``
attribute).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trainer.models.base import Arrays, EmbeddingModel

BLOCK = 1024  # query rows per matrix product
TITLE_FIELDS = ("title", "name")
"""Catalogue attributes that name an item, the first an item has winning."""


@dataclass(frozen=True)
class Neighbour:
    item_id: str
    cosine: float


def item_biases(model: EmbeddingModel) -> npt.NDArray[np.float32] | None:
    """The model's learned bias per item, in its item order, or None for a model without one."""
    _, arrays = model.to_arrays()
    return _bias_of(arrays, model.n_items)


def _bias_of(arrays: Arrays, n_items: int) -> npt.NDArray[np.float32] | None:
    bias = arrays.get("item_bias")
    if bias is None:
        return None
    values = np.asarray(bias, np.float32).reshape(-1)
    return values if len(values) == n_items else None


def bias_extremes(
    item_ids: Sequence[str], biases: npt.NDArray[np.float32], n: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(the n items with the highest bias, highest first; the n with the lowest, lowest first)."""
    order = np.argsort(biases, kind="stable")
    low = [(item_ids[i], float(biases[i])) for i in order[:n]]
    high = [(item_ids[i], float(biases[i])) for i in order[::-1][:n]]
    return high, low


def neighbours(model: EmbeddingModel, rows: Sequence[int], k: int) -> Iterator[list[Neighbour]]:
    """Each row's k nearest other items by cosine of ``similar_vectors`` (a zero vector has none)."""
    vectors = np.asarray(model.similar_vectors(), np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    k = min(k, len(unit) - 1)
    for start in range(0, len(rows), BLOCK):
        block = np.asarray(rows[start : start + BLOCK], np.int64)
        scores = unit[block] @ unit.T  # (b, n)
        scores[np.arange(len(block)), block] = -np.inf  # not its own neighbour
        scores[:, norms == 0] = -np.inf
        yield from (_top(row, scores[j], k, model.item_ids, norms[row] > 0) for j, row in enumerate(block))


def _top(row: int, scores: npt.NDArray[np.float32], k: int, item_ids: Sequence[str], has: bool) -> list[Neighbour]:
    if not has or k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [Neighbour(item_ids[i], float(scores[i])) for i in best if np.isfinite(scores[i])]


def read_titles(path: Path) -> dict[str, str]:
    """Item id -> title from a tab- or comma-separated file whose header names an item id column
    (``item_id`` or ``item_id:token``, as RecBole's ``.item`` files) and a title column (any name containing
    ``title``)."""
    with path.open(newline="", encoding="utf-8") as f:
        head = f.readline()
        delimiter = "\t" if "\t" in head else ","
        columns = [c.split(":")[0].strip().lower() for c in next(csv.reader([head], delimiter=delimiter))]
        if "item_id" not in columns or not any("title" in c for c in columns):
            raise ValueError(f"{path}: the header needs an item_id column and a title column, found {columns}")
        id_col, title_col = columns.index("item_id"), next(k for k, c in enumerate(columns) if "title" in c)
        rows = csv.reader(f, delimiter=delimiter)
        return {r[id_col]: r[title_col] for r in rows if len(r) > max(id_col, title_col)}


def named(item_id: str, titles: Mapping[str, str]) -> str:
    """The item id, with its title where one is known."""
    title = titles.get(item_id)
    return f"{item_id} ({title})" if title else item_id


def catalogue_titles(attributes: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, str]:
    """Item id -> title from catalogue attributes (item -> field -> values): the first value of the first of
    ``TITLE_FIELDS`` the item has; items with neither are left out."""
    out: dict[str, str] = {}
    for item, attrs in attributes.items():
        title = next((attrs[f][0] for f in TITLE_FIELDS if attrs.get(f)), None)
        if title:
            out[item] = title
    return out
