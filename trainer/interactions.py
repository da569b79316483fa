"""The one shape in which interaction data enters the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Interactions:
    """An interaction log as aligned arrays (one row per event).

    ``users``/``items`` index into ``user_ids``/``item_ids``. ``weights`` is the
    implicit-feedback confidence (> 0 means a positive signal, <= 0 a negative
    or neutral one); ``values`` holds explicit ratings (NaN where there is none);
    ``ts`` is epoch milliseconds (0 where the source has no time).
    """

    users: Int32Array
    items: Int32Array
    weights: FloatArray
    values: FloatArray
    ts: IntArray
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("items", "weights", "values", "ts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has {len(getattr(self, name))} rows, not {n}")
        if n and (int(self.users.max()) >= len(self.user_ids) or int(self.users.min()) < 0):
            raise ValueError("Interactions.users indexes outside user_ids")
        if n and (int(self.items.max()) >= len(self.item_ids) or int(self.items.min()) < 0):
            raise ValueError("Interactions.items indexes outside item_ids")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        """Rows where ``mask`` is true, keeping the same id maps."""
        return Interactions(
            self.users[mask],
            self.items[mask],
            self.weights[mask],
            self.values[mask],
            self.ts[mask],
            self.user_ids,
            self.item_ids,
        )

    def positives(self) -> Interactions:
        """Only the rows with a positive implicit weight."""
        return self.select(self.weights > 0)

    def item_counts(self) -> IntArray:
        """How many rows each item has (length ``n_items``)."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    @classmethod
    def from_ids(
        cls,
        user_ids: list[str],
        item_ids: list[str],
        weights: list[float] | FloatArray | None = None,
        values: list[float] | FloatArray | None = None,
        ts: list[int] | IntArray | None = None,
    ) -> Interactions:
        """Build from parallel lists of external ids, assigning dense indices in first-seen order."""
        u_index: dict[str, int] = {}
        i_index: dict[str, int] = {}
        users = np.fromiter((u_index.setdefault(u, len(u_index)) for u in user_ids), np.int32, len(user_ids))
        items = np.fromiter((i_index.setdefault(i, len(i_index)) for i in item_ids), np.int32, len(item_ids))
        n = len(users)
        return cls(
            users,
            items,
            np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32),
            np.full(n, np.nan, np.float32) if values is None else np.asarray(values, np.float32),
            np.zeros(n, np.int64) if ts is None else np.asarray(ts, np.int64),
            list(u_index),
            list(i_index),
        )
