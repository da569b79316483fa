"""The one interface every recd model implements.

The serving loop only ever needs three things from a model:

* ``index_vectors()`` - one row per item, put into a faiss inner-product index;
* ``query_vectors(histories)`` - one row per user, built from that user's recent
  history (so a brand-new user is served from their first event, no retraining);
  ``query @ index_vector`` ranks items for that user;
* ``similar_vectors()`` - unit-length rows for item-to-item similarity (cosine).

Training is ``fit(data, warm_from=previous_model)``: with ``warm_from`` the model
keeps the previous item rows (matched by external id), adds rows for new items
and refines everything on the new data.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from trainer.interactions import FloatArray, Interactions

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class History:
    """One user's recent history: dense item indices and a weight for each.

    Weights already combine event type and recency; items unknown to the model
    must be dropped before building a History.
    """

    items: npt.NDArray[np.int64]
    weights: FloatArray


@dataclass(frozen=True)
class FitReport:
    """What one ``fit`` call did."""

    model: str
    device: str
    epochs: int
    seconds: float
    samples: int  # training pairs / examples processed (all epochs)
    samples_per_s: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    new_items: int = 0  # rows added on warm start


EpochCallback = Callable[[int, float], None]  # (epoch, mean loss)


class EmbeddingModel(ABC):
    """Base class: id maps plus the vectors the daemon serves."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self.item_ids: list[str] = []

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    @abstractmethod
    def fit(
        self, data: Interactions, *, warm_from: EmbeddingModel | None = None, on_epoch: EpochCallback | None = None
    ) -> FitReport:
        """Train on ``data`` (warm-starting from ``warm_from`` when given)."""

    def planned_epochs(self, warm: bool) -> int | None:
        """Epochs the next ``fit`` runs (a warm start when ``warm``), for progress and ETA; None when the
        model does not count in epochs."""
        return None

    def setting(self, name: str) -> Any:
        """The value of constructor setting ``name`` (``dim``, ``reg``...), fitted or not; None if the model
        has no such setting. Read from a dataclass ``config``, a ``config()`` method, or an attribute."""
        config = getattr(self, "config", None)
        if callable(config):
            config = config()
        elif dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        if isinstance(config, dict) and name in config:
            return config[name]
        return getattr(self, name, None)

    @abstractmethod
    def index_vectors(self) -> FloatArray:
        """(n_items, d) float32 rows for the inner-product ANN index."""

    @abstractmethod
    def query_vectors(self, histories: Sequence[History]) -> FloatArray:
        """(len(histories), d) float32 query rows; zeros for an empty history."""

    @abstractmethod
    def similar_vectors(self) -> FloatArray:
        """(n_items, d') float32 unit rows for item-to-item cosine similarity."""

    @abstractmethod
    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        """(JSON-able config, named arrays) - everything needed to rebuild the model."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Arrays, item_ids: list[str]) -> EmbeddingModel:
        """Inverse of ``to_arrays``."""
