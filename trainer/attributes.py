"""Item attributes as training reads them: the one owner of their in-memory format.

An item's attributes are (field, value) pairs: ``{"genre": ["Comedy", "Drama"],
"decade": "1990s"}``. ``ItemAttributes`` holds them for a list of item ids as
flat numpy arrays in CSR form, so a model gathers a batch's pairs with a few
array operations and never builds a Python object per pair:

* ``offsets`` (n_items + 1,): item ``r``'s pairs are ``offsets[r]:offsets[r + 1]``;
* ``fields`` (n_pairs,): index into ``field_names``;
* ``values`` (n_pairs,): index into ``value_names``, whose entries are tokens
  ``"<field>=<value>"`` (``"genre=Comedy"``): a value token belongs to exactly
  one field, so "Drama" as a genre and "Drama" as a tag are different values.

Within an item, pairs are sorted by (field, value) and distinct. Bounds (the
catalogue topic's, schemas/catalogue.py; enforced here by ``from_mapping``): at
most ``MAX_VALUES_PER_ITEM`` pairs per item and ``MAX_VALUES_PER_FIELD`` per
field of an item (the first ones given are kept);
field names and values longer than ``MAX_NAME_CHARS`` characters, or blank,
are dropped, never truncated (a cut name could merge two distinct values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.catalogue import MAX_NAME_CHARS, MAX_VALUES_PER_FIELD, MAX_VALUES_PER_ITEM
from trainer.interactions import IntArray

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_VALUES_PER_FIELD",
    "MAX_VALUES_PER_ITEM",
    "AttributeMapping",
    "ItemAttributes",
    "value_token",
]

AttributeMapping = Mapping[str, Mapping[str, "str | Sequence[str]"]]


def value_token(field: str, value: str) -> str:
    """The vocabulary entry of ``value`` in ``field``: ``"genre=Comedy"``."""
    return f"{field}={value}"


def _clean(values: str | Sequence[str]) -> list[str]:
    """A field's values as distinct, stripped, bounded strings in the order given."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for v in items:
        text = str(v).strip()
        if text and len(text) <= MAX_NAME_CHARS and text not in out:
            out.append(text)
    return out[:MAX_VALUES_PER_FIELD]


def _index(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


@dataclass(frozen=True)
class ItemAttributes:
    """(field, value) pairs of ``item_ids`` in CSR form; see the module docstring."""

    item_ids: list[str]
    offsets: IntArray  # (n_items + 1,)
    fields: IntArray  # (n_pairs,) into field_names
    values: IntArray  # (n_pairs,) into value_names
    field_names: list[str]
    value_names: list[str]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.offsets.shape != (n + 1,) or int(self.offsets[0]) != 0 or bool((np.diff(self.offsets) < 0).any()):
            raise ValueError(f"ItemAttributes.offsets must be ({n + 1},), start at 0 and never decrease")
        if len(self.fields) != int(self.offsets[-1]) or len(self.values) != len(self.fields):
            raise ValueError("ItemAttributes: fields and values must have offsets[-1] entries")
        if len(self.fields) and (int(self.fields.max()) >= len(self.field_names) or int(self.fields.min()) < 0):
            raise ValueError("ItemAttributes.fields indexes outside field_names")
        if len(self.values) and (int(self.values.max()) >= len(self.value_names) or int(self.values.min()) < 0):
            raise ValueError("ItemAttributes.values indexes outside value_names")

    # ------------------------------------------------------------ building

    @classmethod
    def empty(cls, item_ids: Sequence[str] = ()) -> ItemAttributes:
        """No attributes for any of ``item_ids``."""
        none = np.zeros(0, np.int64)
        return cls(list(item_ids), np.zeros(len(item_ids) + 1, np.int64), none, none.copy(), [], [])

    @classmethod
    def from_mapping(cls, mapping: AttributeMapping) -> ItemAttributes:
        """``{item_id: {field: value or [values]}}`` -> ItemAttributes (bounded as the module docstring says)."""
        field_index: dict[str, int] = {}
        value_index: dict[str, int] = {}
        value_field: list[int] = []
        lengths: list[int] = []
        flat: list[int] = []
        for attrs in mapping.values():
            start = len(flat)
            for field, raw in attrs.items():
                name = str(field).strip()
                if not name or len(name) > MAX_NAME_CHARS:
                    continue
                f = field_index.setdefault(name, len(field_index))
                for value in _clean(raw):
                    token = value_token(name, value)
                    if token not in value_index:
                        value_index[token] = len(value_index)
                        value_field.append(f)
                    flat.append(value_index[token])
            del flat[start + MAX_VALUES_PER_ITEM :]
            lengths.append(len(flat) - start)
        values = np.asarray(flat, np.int64)
        fields = np.asarray(value_field, np.int64)[values] if len(values) else values.copy()
        return cls._sorted(list(mapping), lengths, fields, values, list(field_index), list(value_index))

    @classmethod
    def _sorted(
        cls,
        item_ids: list[str],
        lengths: Sequence[int] | IntArray,
        fields: IntArray,
        values: IntArray,
        field_names: list[str],
        value_names: list[str],
    ) -> ItemAttributes:
        """Pairs sorted by (field, value) inside each item, repeats dropped; lengths per item in ``item_ids`` order."""
        offsets = np.zeros(len(item_ids) + 1, np.int64)
        np.cumsum(np.asarray(lengths, np.int64), out=offsets[1:])
        owner = np.repeat(np.arange(len(item_ids), dtype=np.int64), np.diff(offsets))
        order = np.lexsort((values, fields, owner))
        owner, fields, values = owner[order], fields[order], values[order]
        keep = np.r_[True, (owner[1:] != owner[:-1]) | (values[1:] != values[:-1])] if len(owner) else owner > 0
        owner, fields, values = owner[keep], fields[keep], values[keep]
        np.cumsum(np.bincount(owner, minlength=len(item_ids)), out=offsets[1:])
        return cls(item_ids, offsets, fields.astype(np.int64), values.astype(np.int64), field_names, value_names)

    # ------------------------------------------------------------ reading

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def lengths(self) -> IntArray:
        """(n_items,) pairs per item."""
        return np.diff(self.offsets)

    def owners(self) -> IntArray:
        """(n_pairs,) the item row of every pair."""
        return np.repeat(np.arange(self.n_items, dtype=np.int64), self.lengths())

    def value_fields(self) -> IntArray:
        """(n_values,) the field of every value token (-1 for a token no pair uses)."""
        out = np.full(len(self.value_names), -1, np.int64)
        out[self.values] = self.fields
        for v in np.flatnonzero(out < 0).tolist():  # unused tokens: read the field off the token
            out[v] = self.field_names.index(self.value_names[v].split("=", 1)[0])
        return out

    def value_items(self) -> IntArray:
        """(n_values,) how many items carry each value."""
        return np.bincount(self.values, minlength=len(self.value_names)).astype(np.int64)

    def to_mapping(self) -> dict[str, dict[str, list[str]]]:
        """Back to ``{item_id: {field: [values]}}`` (for inspection and tests; one object per pair)."""
        out: dict[str, dict[str, list[str]]] = {}
        for row, item in enumerate(self.item_ids):
            attrs: dict[str, list[str]] = {}
            for k in range(int(self.offsets[row]), int(self.offsets[row + 1])):
                field = self.field_names[int(self.fields[k])]
                attrs.setdefault(field, []).append(self.value_names[int(self.values[k])][len(field) + 1 :])
            out[item] = attrs
        return out

    # ------------------------------------------------------------ reshaping

    def take(self, rows: npt.ArrayLike, item_ids: Sequence[str] | None = None) -> ItemAttributes:
        """The attributes of ``rows`` (item rows, -1 = none) in that order, named ``item_ids`` (default: theirs)."""
        r = np.asarray(rows, np.int64)
        lens = np.where(r >= 0, self.lengths()[np.maximum(r, 0)], 0) if self.n_items else np.zeros(len(r), np.int64)
        start = self.offsets[np.maximum(r, 0)] if self.n_items else np.zeros(len(r), np.int64)
        owner = np.repeat(np.arange(len(r), dtype=np.int64), lens)
        first = np.cumsum(lens) - lens  # (len(r),) where each row's pairs start in the output
        src = start[owner] + np.arange(len(owner), dtype=np.int64) - first[owner]
        offsets = np.zeros(len(r) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        if item_ids is None and bool((r < 0).any()):
            raise ValueError("take: rows of -1 (no attributes) need item_ids to name them")
        ids = [self.item_ids[int(k)] for k in r] if item_ids is None else list(item_ids)
        return ItemAttributes(ids, offsets, self.fields[src], self.values[src], self.field_names, self.value_names)

    def select_pairs(self, keep: npt.NDArray[np.bool_]) -> ItemAttributes:
        """Only the pairs where ``keep`` ((n_pairs,) bool) is true; same items, same vocabulary."""
        offsets = np.zeros(self.n_items + 1, np.int64)
        np.cumsum(np.bincount(self.owners()[keep], minlength=self.n_items), out=offsets[1:])
        return ItemAttributes(
            self.item_ids, offsets, self.fields[keep], self.values[keep], self.field_names, self.value_names
        )

    def align(self, item_ids: Sequence[str]) -> ItemAttributes:
        """These attributes for ``item_ids`` in that order (a model's rows); unknown items get no attributes."""
        index = _index(self.item_ids)
        rows = np.fromiter((index.get(item, -1) for item in item_ids), np.int64, len(item_ids))
        return self.take(rows, item_ids)

    def with_vocabulary(self, field_names: Sequence[str], value_names: Sequence[str]) -> ItemAttributes:
        """The same pairs re-encoded in a vocabulary that starts with the given names (in that order); names of
        these attributes that the given ones lack are appended after them."""
        fields, values = list(field_names), list(value_names)
        f_index, v_index = _index(fields), _index(values)
        for names, index, vocabulary in ((self.field_names, f_index, fields), (self.value_names, v_index, values)):
            for name in names:
                if name not in index:
                    index[name] = len(vocabulary)
                    vocabulary.append(name)
        f_map = np.fromiter((f_index[n] for n in self.field_names), np.int64, len(self.field_names))
        v_map = np.fromiter((v_index[n] for n in self.value_names), np.int64, len(self.value_names))
        return ItemAttributes(self.item_ids, self.offsets, f_map[self.fields], v_map[self.values], fields, values)

    def updated(self, newer: ItemAttributes) -> ItemAttributes:
        """Items of ``newer`` replace these (their new pairs whole); items only here stay. Ids: these, then
        ``newer``'s new ones; vocabulary: these names, then ``newer``'s new ones."""
        newer = newer.with_vocabulary(self.field_names, self.value_names)
        base = self.with_vocabulary(newer.field_names, newer.value_names)
        index, mine = _index(newer.item_ids), _index(self.item_ids)
        ids = self.item_ids + [i for i in newer.item_ids if i not in mine]
        from_newer = np.fromiter((index.get(i, -1) for i in ids), np.int64, len(ids))
        old_rows = np.where(from_newer < 0, np.arange(len(ids)), -1)
        old_rows[old_rows >= self.n_items] = -1
        a, b = base.take(old_rows, ids), newer.take(from_newer, ids)
        lengths = a.lengths() + b.lengths()
        owner_a, owner_b = a.owners(), b.owners()
        order = np.argsort(np.r_[owner_a, owner_b], kind="stable")
        fields = np.r_[a.fields, b.fields][order]
        values = np.r_[a.values, b.values][order]
        return ItemAttributes._sorted(ids, lengths, fields, values, base.field_names, base.value_names)
