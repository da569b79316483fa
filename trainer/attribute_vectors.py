"""Vectors for items known only by their attributes (new catalogue items), from a trained model, without
retraining.

Every model is treated alike: an ``AttributeMap`` (trainer/attribute_map.py: ridge regression from attribute
values to item rows) is fitted on the model's items in both of its spaces (recommendation rows and
similar-items rows), and a new item's rows are the map applied to its values: a new film by a known director
lands beside that director's films, shifted by its genre and year. ``side_info``'s own attribute embeddings
place cold items worse than the map fitted on its rows (bench.cold_items, docs/benchmarks.md). An item with
none of the map's values gets no vector (it cannot be placed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.attribute_map import AttributeMap
from trainer.attributes import ItemAttributes
from trainer.models.base import EmbeddingModel

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Placed:
    """Vectors of the items that could be placed (``rows`` index the asked items)."""

    rows: npt.NDArray[np.int64]
    rec: FloatArray
    sim: FloatArray


@dataclass(frozen=True)
class AttributeVectors:
    """Places new items by their attributes in a model's two vector spaces."""

    model: EmbeddingModel
    mapping: AttributeMap  # targets: the model's index rows, then its similar-items rows

    @classmethod
    def of(cls, model: EmbeddingModel, attributes: ItemAttributes) -> AttributeVectors:
        """From ``model`` and its items' attributes (any order; aligned to the model's items here)."""
        targets = [np.asarray(model.index_vectors(), np.float32), np.asarray(model.similar_vectors(), np.float32)]
        return cls(model, AttributeMap.fit(attributes.align(model.item_ids), targets))

    def place(self, attributes: ItemAttributes) -> Placed:
        """Vectors for the items of ``attributes``; items with no usable value are left out."""
        rows, (rec, sim) = self.mapping.apply(attributes)
        unit = sim / np.maximum(np.linalg.norm(sim, axis=1, keepdims=True), 1e-12)
        return Placed(rows, rec, unit.astype(np.float32))
