"""Reading interaction datasets from disk into ``Interactions``.

Formats (auto-detected, or forced with ``fmt=``):

* ``recbole`` - RecBole atomic files: ``<name>.inter`` with a typed header
  (``user_id:token``...), optional sibling ``<name>.user`` (profiles) and
  ``<name>.item`` (titles);
* ``csv`` - comma-separated with a header naming user / item / rating /
  timestamp (and optionally title) columns;
* ``triples`` - ``user item weight [timestamp]`` split on whitespace or tabs,
  with an optional header (HetRec's ``userID artistID weight``);
* ``adjacency`` - ``user item1 item2 ...`` lines (graph-recommender benchmarks).

A path is one file, a folder holding one interaction file, or a folder with
``train``/``valid``/``test`` files (pre-split; the splits share one id map).
Explicit ratings become implicit weights (``value >= rating_threshold`` -> 1,
else 0, the rating kept in ``values``); play counts become weight 1 with the
count in ``values``; 0/1 data keeps its weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.dataset_formats import (
    KINDS,
    Table,
    find_interaction_files,
    read_item_titles,
    read_table,
    read_user_profiles,
)
from trainer.interactions import Interactions

SPLITS = ("train", "valid", "test")
SYNTHETIC_START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: replay time for data without timestamps
SYNTHETIC_STEP_MS = 1000
AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"))


@dataclass(frozen=True)
class Dataset:
    """One dataset; ``valid``/``test`` are set when the source was pre-split."""

    name: str
    train: Interactions
    valid: Interactions | None
    test: Interactions | None
    item_titles: dict[str, str] = field(default_factory=dict)
    user_profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    value_kind: str = "binary"  # "rating" | "count" | "binary"
    has_timestamps: bool = False

    @property
    def is_split(self) -> bool:
        return self.test is not None

    def all(self) -> Interactions:
        """train + valid + test as one log (file order within each split)."""
        parts = [p for p in (self.train, self.valid, self.test) if p is not None]
        return concat_interactions(*parts)


def concat_interactions(*parts: Interactions) -> Interactions:
    """Rows of several logs that share one id map, in the order given."""
    if not parts:
        raise ValueError("concat_interactions needs at least one part")
    first = parts[0]
    for p in parts[1:]:
        if p.user_ids is not first.user_ids and p.user_ids != first.user_ids:
            raise ValueError("concat_interactions: parts have different user id maps")
        if p.item_ids is not first.item_ids and p.item_ids != first.item_ids:
            raise ValueError("concat_interactions: parts have different item id maps")
    return Interactions(
        np.concatenate([p.users for p in parts]),
        np.concatenate([p.items for p in parts]),
        np.concatenate([p.weights for p in parts]),
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.ts for p in parts]),
        first.user_ids,
        first.item_ids,
    )


def load_dataset(
    path: str | Path, *, rating_threshold: float = 4.0, fmt: str | None = None, value_kind: str | None = None
) -> Dataset:
    """Read a dataset file or folder (see the module docstring for formats).

    ``value_kind`` forces how the numeric column is read ("rating", "count",
    "binary"); by default a column name or the values decide. Raises
    ``ValueError`` naming the file and line for malformed input.
    """
    path = Path(path)
    if value_kind is not None and value_kind not in KINDS:
        raise ValueError(f"value_kind must be one of {KINDS}, not {value_kind!r}")
    files = find_interaction_files(path, fmt)
    tables = {split: read_table(f, fmt, value_kind) for split, f in files.items()}
    kinds = {t.kind for t in tables.values()}
    if len(kinds) > 1:
        raise ValueError(f"{path}: splits read as different kinds {sorted(kinds)}; pass value_kind=")
    user_map: dict[str, int] = {}
    item_map: dict[str, int] = {}
    for t in tables.values():
        for u in t.users:
            user_map.setdefault(u, len(user_map))
        for i in t.items:
            item_map.setdefault(i, len(item_map))
    user_ids, item_ids = list(user_map), list(item_map)
    built = {s: _interactions(t, user_map, item_map, user_ids, item_ids, rating_threshold) for s, t in tables.items()}
    main = files.get("train") or files["all"]
    return Dataset(
        name=path.stem if path.is_file() else path.name,
        train=built.get("train", built.get("all")),  # type: ignore[arg-type]
        valid=built.get("valid"),
        test=built.get("test"),
        item_titles=read_item_titles(main, tables),
        user_profiles=read_user_profiles(main),
        value_kind=next(iter(kinds)),
        has_timestamps=any(t.has_ts for t in tables.values()),
    )


def _interactions(
    t: Table,
    user_map: dict[str, int],
    item_map: dict[str, int],
    user_ids: list[str],
    item_ids: list[str],
    threshold: float,
) -> Interactions:
    n = len(t.users)
    users = np.fromiter((user_map[u] for u in t.users), np.int32, n)
    items = np.fromiter((item_map[i] for i in t.items), np.int32, n)
    raw = np.asarray(t.values, np.float32)  # (n,) the numeric column (1.0 where the format has none)
    if t.kind == "rating":
        weights, values = (raw >= threshold).astype(np.float32), raw
    elif t.kind == "count":
        weights, values = (raw > 0).astype(np.float32), raw
    else:
        weights, values = raw, np.full(n, np.nan, np.float32)
    return Interactions(users, items, weights, values, np.asarray(t.ts, np.int64), user_ids, item_ids)


def iter_events(path: str | Path, *, rating_threshold: float = 4.0) -> Iterator[dict[str, Any]]:
    """A dataset's rows as interaction events, sorted by time (stable).

    Each event is ``{"user_id", "item_id", "type", "ts"}`` plus ``"value"`` for
    ratings. Ratings are type "rating"; play counts "view" (the count is not an
    event field); 0/1 data "click". Data without timestamps keeps file order
    (train, then valid, then test) and gets synthetic times 1 s apart from
    2020-01-01, so the events satisfy the contract's epoch-ms rule.
    """
    data = load_dataset(path, rating_threshold=rating_threshold)
    log = data.all()
    if data.has_timestamps:
        order = np.argsort(log.ts, kind="stable")
        ts = log.ts
    else:
        order = np.arange(len(log))
        ts = SYNTHETIC_START_MS + SYNTHETIC_STEP_MS * np.arange(len(log), dtype=np.int64)
    etype = {"rating": "rating", "count": "view"}.get(data.value_kind, "click")
    for row in order.tolist():
        event: dict[str, Any] = {
            "user_id": log.user_ids[log.users[row]],
            "item_id": log.item_ids[log.items[row]],
            "type": etype,
            "ts": int(ts[row]),
        }
        if etype == "rating":
            event["value"] = float(log.values[row])
        yield event


def iter_profiles(path: str | Path) -> Iterator[dict[str, Any]]:
    """``{"user_id", "attributes"}`` for each user with a profile (none for most formats).

    Attributes are coarsened for segmenting: age becomes a band ("25-34"), a zip
    code only its first character (``region``); other attributes pass through.
    """
    path = Path(path)
    files = find_interaction_files(path, None)
    main = files.get("train") or files["all"]
    for user_id, raw in read_user_profiles(main).items():
        yield {"user_id": user_id, "attributes": profile_attributes(raw)}


def profile_attributes(raw: dict[str, str]) -> dict[str, str]:
    """Coarsen raw profile attributes: age -> band, zip -> 1-char region, others unchanged."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = key.lower()
        if not value:
            continue
        if name == "age":
            out["age_band"] = age_band(value)
        elif name in ("zip", "zip_code", "zipcode", "postcode", "postal_code"):
            out["region"] = value[:1].upper()
        else:
            out[name] = value
    return out


def age_band(age: str) -> str:
    """ "25" -> "25-34"; bands <18, 18-24, 25-34, 35-44, 45-54, 55+ (non-numbers pass through)."""
    try:
        years = float(age)
    except ValueError:
        return age
    for upper, band in AGE_BANDS:
        if years < upper:
            return band
    return "55+"
