"""Vectors for items known only by their attributes (new catalogue items), from a trained model, without
retraining.

A model that learned attribute embeddings (``side_info``) answers itself (``vectors_for_attributes``,
``similar_for_attributes``). For every other model an attribute value's vector is the mean of the vectors of
the model's items that have it (in both the recommendation and the similar-items space), and a new item's
vector is the mean over its values the model's items have: a new comedy by a known brand lands among the
comedies and that brand's items. An item with no such value gets no vector (it cannot be placed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

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
    vocabulary: ItemAttributes  # the model items' attributes: its field and value names
    rec_means: FloatArray  # (n_values, d) mean recommendation vector of the items with each value
    sim_means: FloatArray  # (n_values, d') the same in the similar-items space
    known: npt.NDArray[np.bool_]  # (n_values,) values some model item has

    @classmethod
    def of(cls, model: EmbeddingModel, attributes: ItemAttributes) -> AttributeVectors:
        """From ``model`` and its items' attributes (any order; aligned to the model's items here)."""
        aligned = attributes.align(model.item_ids)
        n_values = len(aligned.value_names)
        owners = aligned.owners()
        counts = np.bincount(aligned.values, minlength=n_values).astype(np.float32)
        means: list[FloatArray] = []
        for vectors in (model.index_vectors(), model.similar_vectors()):
            total = np.zeros((n_values, vectors.shape[1]), np.float32)
            np.add.at(total, aligned.values, vectors[owners])
            means.append(np.asarray(total / np.maximum(counts, 1.0)[:, None], np.float32))
        return cls(model, aligned, means[0], means[1], counts > 0)

    def place(self, attributes: ItemAttributes) -> Placed:
        """Vectors for the items of ``attributes``; items with no usable value are left out."""
        own: Any = getattr(self.model, "vectors_for_attributes", None)
        if own is not None:  # the model learned attribute embeddings
            rec = np.asarray(own(attributes), np.float32)
            sim = np.asarray(self.model.similar_for_attributes(attributes), np.float32)  # type: ignore[attr-defined]
            rows = np.flatnonzero(np.abs(sim).sum(1) > 0)
            return Placed(rows, rec[rows], sim[rows])
        vocab = self.vocabulary
        known = attributes.with_vocabulary(vocab.field_names, vocab.value_names)
        usable = known.values < len(vocab.value_names)
        usable[usable] = self.known[known.values[usable]]
        owners, values = known.owners()[usable], known.values[usable]
        counts = np.bincount(owners, minlength=known.n_items).astype(np.float32)
        rows = np.flatnonzero(counts > 0)
        out = []
        for means in (self.rec_means, self.sim_means):
            total = np.zeros((known.n_items, means.shape[1]), np.float32)
            np.add.at(total, owners, means[values])
            out.append(total[rows] / counts[rows, None])
        sim = out[1] / np.maximum(np.linalg.norm(out[1], axis=1, keepdims=True), 1e-12)
        return Placed(rows.astype(np.int64), out[0], sim.astype(np.float32))
