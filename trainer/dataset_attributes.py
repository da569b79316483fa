"""Item metadata of the evaluation datasets as ``ItemAttributes``, keyed like ``trainer.datasets.load_dataset``.

* **RecBole (ML-100K)**: ``<name>.item`` gives ``year`` and ``decade`` (from
  ``release_year``) and ``genre`` (``class``, split on spaces). With
  ``<name>.kg`` (head, relation, tail) and ``<name>.link`` (item, entity), each
  linked item also gets its knowledge-graph relations where the item's entity is
  the head: field = relation (``film.film.actor``), value = tail entity. Only
  (relation, tail) values that at least ``KG_MIN_ITEMS`` items share are kept (a
  value only one item has says nothing about any other item), at most
  ``KG_MAX_PER_RELATION`` per relation and ``KG_MAX_PER_ITEM`` per item, the
  values shared by the most items first.
* **MovieLens CSV (movielens-dslabs)**: a ``ratings.csv`` (or ``movies.csv``)
  with ``title``/``year``/``genres`` columns gives ``year``, ``decade`` and
  ``genre`` (split on ``|``; ``(no genres listed)`` is none). Titles are unique
  per item, so they are not attributes.

``load_attributes(path)`` picks the reader; ``None`` when a dataset has no item
metadata it knows.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from trainer.attributes import MAX_VALUES_PER_ITEM, ItemAttributes
from trainer.dataset_formats import ITEM_COLS, find_interaction_files

KG_MIN_ITEMS = 2
"""A knowledge-graph value is kept when at least this many items have it."""
KG_MAX_PER_RELATION = 8
"""Most values of one knowledge-graph relation kept per item (the most shared first)."""
KG_MAX_PER_ITEM = 40
"""Most knowledge-graph values kept per item (below ``MAX_VALUES_PER_ITEM``, leaving room for the .item fields)."""
NO_GENRE = "(no genres listed)"
CSV_METADATA = ("ratings.csv", "movies.csv")

FieldValues = dict[str, list[str]]


def load_attributes(path: str | Path) -> ItemAttributes | None:
    """The item attributes of the dataset at ``path`` (a file or folder ``load_dataset`` reads), or None."""
    path = Path(path)
    main = find_interaction_files(path, None)
    first = main.get("train") or main["all"]
    if first.suffix == ".inter":
        return recbole_attributes(first)
    folder = first.parent
    for name in CSV_METADATA:
        if (folder / name).is_file():
            found = csv_attributes(folder / name)
            if found.n_items:
                return found
    return None


def year_fields(raw: str) -> FieldValues:
    """``"1995"`` / ``"1995.0"`` -> ``{"year": ["1995"], "decade": ["1990s"]}``; {} when not a year."""
    try:
        year = int(float(raw))
    except ValueError:
        return {}
    if not 1000 <= year <= 9999:
        return {}
    return {"year": [str(year)], "decade": [f"{year // 10 * 10}s"]}


# ---------------------------------------------------------------- RecBole


def _rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a tab-separated RecBole atomic file as ``{column name: cell}`` (``item_id:token`` -> ``item_id``)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = [h.split(":", 1)[0].strip() for h in fh.readline().rstrip("\r\n").split("\t")]
        for line in fh:
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) == len(header):
                yield dict(zip(header, cells, strict=True))


def recbole_attributes(inter: Path) -> ItemAttributes:
    """Attributes of a RecBole dataset from the siblings of its ``.inter`` file (see the module docstring)."""
    stem = inter.name.split(".", 1)[0]
    item_file, kg, link = (inter.with_name(stem + s) for s in (".item", ".kg", ".link"))
    mapping: dict[str, FieldValues] = defaultdict(dict)
    if item_file.is_file():
        for row in _rows(item_file):
            item = row.get("item_id", "").strip()
            if item:
                mapping[item].update(year_fields(row.get("release_year", "")))
                genres = row.get("class", "").split()
                if genres:
                    mapping[item]["genre"] = genres
    if kg.is_file() and link.is_file():
        for item, fields in kg_attributes(kg, link).items():
            mapping[item].update(fields)
    return ItemAttributes.from_mapping(mapping)


def kg_attributes(kg: Path, link: Path) -> dict[str, FieldValues]:
    """``{item: {relation: [tail entities]}}`` for linked items, filtered and capped (module docstring)."""
    entity_item = {row["entity_id"].strip(): row["item_id"].strip() for row in _rows(link)}
    facts: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for row in _rows(kg):
        item = entity_item.get(row["head_id"].strip())
        if item is not None:
            facts[item].add((row["relation_id"].strip(), row["tail_id"].strip()))
    shared = Counter(fact for item_facts in facts.values() for fact in item_facts)
    out: dict[str, FieldValues] = {}
    for item, item_facts in facts.items():
        kept = sorted((f for f in item_facts if shared[f] >= KG_MIN_ITEMS), key=lambda f: (-shared[f], f))
        fields: FieldValues = {}
        total = 0
        for relation, tail in kept:
            values = fields.setdefault(relation, [])
            if len(values) < KG_MAX_PER_RELATION and total < min(KG_MAX_PER_ITEM, MAX_VALUES_PER_ITEM):
                values.append(tail)
                total += 1
        out[item] = {k: v for k, v in fields.items() if v}
    return out


# ---------------------------------------------------------------- MovieLens CSV


def csv_attributes(path: Path) -> ItemAttributes:
    """``year``, ``decade`` and ``genre`` per item of a MovieLens-style CSV (first row of each item wins)."""
    mapping: dict[str, FieldValues] = {}
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().strip('"').split(":", 1)[0].lower() for h in next(reader, [])]
        item_col = next((header.index(c) for c in ITEM_COLS if c in header), None)
        if item_col is None or "genres" not in header:
            return ItemAttributes.empty()
        year_col = header.index("year") if "year" in header else None
        genre_col = header.index("genres")
        for row in reader:
            if len(row) != len(header) or row[item_col].strip() in mapping:
                continue
            fields = year_fields(row[year_col]) if year_col is not None else {}
            genres = [g for g in row[genre_col].split("|") if g.strip() and g.strip() != NO_GENRE]
            if genres:
                fields["genre"] = genres
            mapping[row[item_col].strip()] = fields
    return ItemAttributes.from_mapping(mapping)
