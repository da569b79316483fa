"""trainer.attributes (the item-attribute format) and trainer.dataset_attributes (the datasets' metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import dataset_attributes
from trainer.attributes import MAX_NAME_CHARS, MAX_VALUES_PER_FIELD, MAX_VALUES_PER_ITEM, ItemAttributes
from trainer.dataset_attributes import load_attributes
from trainer.datasets import load_dataset


def test_from_mapping_keeps_distinct_values_per_field_as_tokens() -> None:
    attrs = ItemAttributes.from_mapping(
        {"a": {"genre": ["Comedy", "Drama", "Comedy", " "], "year": "1995"}, "b": {"genre": "Drama", "tag": "Drama"}}
    )
    assert attrs.to_mapping() == {
        "a": {"genre": ["Comedy", "Drama"], "year": ["1995"]},
        "b": {"genre": ["Drama"], "tag": ["Drama"]},
    }
    assert "genre=Drama" in attrs.value_names and "tag=Drama" in attrs.value_names  # one token per field
    assert attrs.lengths().tolist() == [3, 2]
    assert attrs.value_items()[attrs.value_names.index("genre=Drama")] == 2
    fields = attrs.value_fields()
    assert [attrs.field_names[f] for f in fields] == [t.split("=")[0] for t in attrs.value_names]


def test_from_mapping_bounds_values_per_field_per_item_and_name_length() -> None:
    many = [f"v{k}" for k in range(3 * MAX_VALUES_PER_FIELD)]
    wide = {f"f{k}": [f"x{k}", f"y{k}"] for k in range(MAX_VALUES_PER_ITEM)}
    attrs = ItemAttributes.from_mapping(
        {"a": {"tags": many}, "b": wide, "c": {"t": "x" * (MAX_NAME_CHARS + 1), "x" * (MAX_NAME_CHARS + 1): "v"}}
    )
    assert attrs.to_mapping()["a"]["tags"] == many[:MAX_VALUES_PER_FIELD]  # the first ones given
    assert attrs.lengths().tolist() == [MAX_VALUES_PER_FIELD, MAX_VALUES_PER_ITEM, 0]


def test_align_follows_the_given_order_and_gives_unknown_items_nothing() -> None:
    attrs = ItemAttributes.from_mapping({"a": {"g": ["x", "y"]}, "b": {"g": "z"}, "c": {}})
    aligned = attrs.align(["b", "new", "a"])
    assert aligned.item_ids == ["b", "new", "a"]
    assert aligned.to_mapping() == {"b": {"g": ["z"]}, "new": {}, "a": {"g": ["x", "y"]}}
    assert aligned.value_names == attrs.value_names
    with pytest.raises(ValueError, match="item_ids"):
        attrs.take(np.array([0, -1]))


def test_updated_replaces_listed_items_and_extends_the_vocabulary_after_the_old_one() -> None:
    old = ItemAttributes.from_mapping({"a": {"g": "x"}, "b": {"g": "y"}})
    new = ItemAttributes.from_mapping({"c": {"brand": "acme"}, "b": {"g": "x"}})
    merged = old.updated(new)
    assert merged.item_ids == ["a", "b", "c"]
    assert merged.to_mapping() == {"a": {"g": ["x"]}, "b": {"g": ["x"]}, "c": {"brand": ["acme"]}}
    assert merged.value_names[: len(old.value_names)] == old.value_names
    assert merged.field_names == ["g", "brand"]
    keep = merged.values != merged.value_names.index("g=x")
    assert merged.select_pairs(keep).to_mapping() == {"a": {}, "b": {}, "c": {"brand": ["acme"]}}


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def test_recbole_reader_gives_year_genres_and_shared_knowledge_graph_values(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    _write(folder / "tiny.inter", inter + [f"u{k % 2}\t{k}\t5\t{k}" for k in (1, 2, 3)])
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    _write(folder / "tiny.item", [*items, "1\tA\t1995\tAction Comedy", "2\tB\t1972\tDrama", "3\tC\t\tDrama"])
    _write(folder / "tiny.link", ["item_id:token\tentity_id:token", "1\tm.1", "2\tm.2", "3\tm.3"])
    actors = [f"m.{k}\tfilm.film.actor\tm.a{j}" for k in (1, 2) for j in range(12)]  # 12 actors shared by 1 and 2
    facts = ["m.1\tfilm.film.directed_by\tm.d1", "m.3\tfilm.film.directed_by\tm.d1", "m.3\tfilm.film.actor\tm.solo"]
    _write(folder / "tiny.kg", ["head_id:token\trelation_id:token\ttail_id:token", *actors, *facts])
    attrs = load_attributes(folder)
    assert attrs is not None and set(attrs.item_ids) == set(load_dataset(folder).train.item_ids)
    got = attrs.to_mapping()
    assert got["1"]["genre"] == ["Action", "Comedy"] and got["1"]["decade"] == ["1990s"]
    assert got["2"]["year"] == ["1972"] and "year" not in got["3"]
    assert got["1"]["film.film.directed_by"] == got["3"]["film.film.directed_by"] == ["m.d1"]
    assert len(got["1"]["film.film.actor"]) == dataset_attributes.KG_MAX_PER_RELATION
    assert "film.film.actor" not in got["3"]  # m.solo: one item only


def test_csv_reader_matches_the_dataset_ids_and_splits_genres(tmp_path: Path) -> None:
    folder = tmp_path / "movielens"
    folder.mkdir()
    _write(
        folder / "ratings.csv",
        [
            "rownames,movieId,title,year,genres,userId,rating,timestamp",
            '1,31,"Minds, Dangerous",1995.0,Drama|Comedy,1,2.5,1260759144',
            "2,7,Dumbo,1941.0,(no genres listed),1,3.0,1260759179",
            "3,31,Minds,1995.0,Drama|Comedy,2,4.0,1260759180",
        ],
    )
    attrs = load_attributes(folder)
    assert attrs is not None and attrs.item_ids == load_dataset(folder).train.item_ids == ["31", "7"]
    assert attrs.to_mapping() == {
        "31": {"year": ["1995"], "decade": ["1990s"], "genre": ["Drama", "Comedy"]},
        "7": {"year": ["1941"], "decade": ["1940s"]},
    }
