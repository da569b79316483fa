"""trainer.datasets: every format on small files written by the tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trainer.datasets import Dataset, age_band, iter_events, iter_profiles, load_dataset, profile_attributes
from trainer.interactions import Interactions


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _rows(data: Interactions) -> list[tuple[str, str, float, float, int]]:
    """(user, item, weight, value, ts) per row, NaN values as -1 for comparison."""
    out = []
    for k in range(len(data)):
        value = float(data.values[k])
        out.append(
            (
                data.user_ids[data.users[k]],
                data.item_ids[data.items[k]],
                float(data.weights[k]),
                -1.0 if math.isnan(value) else value,
                int(data.ts[k]),
            )
        )
    return out


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mini"
    _write(
        d / "mini.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "10\t100\t5\t881250949\n10\t101\t2\t881250950\n11\t100\t4\t881250900\n",
    )
    _write(
        d / "mini.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "10\t24\tM\ttechnician\t85711\n11\t53\tF\tother\t94043\n",
    )
    _write(
        d / "mini.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n100\tToy Story\t1995\n101\tGoldenEye\t1995\n",
    )
    return d


def test_recbole_ratings_thresholded_profiles_and_titles(recbole_dir: Path) -> None:
    data = load_dataset(recbole_dir, rating_threshold=4.0)
    assert isinstance(data, Dataset) and data.name == "mini"
    assert data.valid is None and data.test is None and data.has_timestamps and data.value_kind == "rating"
    assert _rows(data.train) == [
        ("10", "100", 1.0, 5.0, 881250949000),
        ("10", "101", 0.0, 2.0, 881250950000),
        ("11", "100", 1.0, 4.0, 881250900000),
    ]
    assert data.item_titles == {"100": "Toy Story", "101": "GoldenEye"}
    assert data.user_profiles["11"] == {"age": "53", "gender": "F", "occupation": "other", "zip_code": "94043"}
    # the same file given directly, with a stricter threshold
    strict = load_dataset(recbole_dir / "mini.inter", rating_threshold=5.0)
    assert strict.train.weights.tolist() == [1.0, 0.0, 0.0]


def test_csv_columns_found_by_name(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "ratings.csv",
        "rownames,movieId,title,year,genres,userId,rating,timestamp\n"
        '1,31,"Dangerous Minds, The",1995.0,Drama,1,2.5,1260759144\n'
        "2,1029,Dumbo,1941.0,Animation|Children,1,4.5,1260759179\n",
    )
    data = load_dataset(tmp_path)
    assert _rows(data.train) == [("1", "31", 0.0, 2.5, 1260759144000), ("1", "1029", 1.0, 4.5, 1260759179000)]
    assert data.item_titles == {"31": "Dangerous Minds, The", "1029": "Dumbo"}
    assert load_dataset(f, fmt="csv").train.n_items == 2


def test_triples_with_header_are_play_counts(tmp_path: Path) -> None:
    _write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690\r\n3\t51\t7\r\n")
    _write(tmp_path / "artists.dat", "id\tname\turl\tpictureURL\n51\tMALICE MIZER\thttp://x\thttp://y\n")
    _write(tmp_path / "tags.dat", "tagID\ttagValue\n1\tmetal\n")
    data = load_dataset(tmp_path)
    assert data.value_kind == "count" and not data.has_timestamps
    assert _rows(data.train) == [("2", "51", 1.0, 13883.0, 0), ("2", "52", 1.0, 11690.0, 0), ("3", "51", 1.0, 7.0, 0)]
    assert data.item_titles == {"51": "MALICE MIZER"}


def test_headerless_triples_kind_from_values(tmp_path: Path) -> None:
    binary = load_dataset(_write(tmp_path / "a.txt", "u1 i1 1\nu1 i2 1\nu2 i1 0\n"))
    assert binary.value_kind == "binary" and binary.train.weights.tolist() == [1.0, 1.0, 0.0]
    assert np.isnan(binary.train.values).all()
    ratings = load_dataset(_write(tmp_path / "b.txt", "1\t1\t5\t881250949\n1\t2\t3\t881250950\n"))
    assert ratings.value_kind == "rating" and ratings.train.weights.tolist() == [1.0, 0.0]
    assert ratings.train.ts.tolist() == [881250949000, 881250950000]
    forced = load_dataset(tmp_path / "b.txt", value_kind="count")
    assert forced.train.weights.tolist() == [1.0, 1.0] and forced.train.values.tolist() == [5.0, 3.0]


def test_adjacency_lists(tmp_path: Path) -> None:
    data = load_dataset(_write(tmp_path / "graph.txt", "0 5 7 9\n1 5\n2 7 8\n"), rating_threshold=4.0)
    assert data.value_kind == "binary"
    assert [(u, i) for u, i, *_ in _rows(data.train)] == [
        ("0", "5"),
        ("0", "7"),
        ("0", "9"),
        ("1", "5"),
        ("2", "7"),
        ("2", "8"),
    ]
    assert data.train.n_users == 3 and data.train.n_items == 4


def test_pre_split_folder_shares_one_id_map(tmp_path: Path) -> None:
    _write(tmp_path / "train.txt", "0 0 1\n0 1 1\n1 1 1\n")
    _write(tmp_path / "valid.txt", "0 2 1\n")
    _write(tmp_path / "test.txt", "1 3 1\n2 0 1\n")
    data = load_dataset(tmp_path)
    assert data.valid is not None and data.test is not None and data.is_split
    assert data.train.item_ids is data.test.item_ids and data.train.n_items == 4 and data.train.n_users == 3
    assert [(u, i) for u, i, *_ in _rows(data.test)] == [("1", "3"), ("2", "0")]
    assert len(data.all()) == 6


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.inter", "user_id:token\titem_id:token\trating:float\n1\t2\tfive\n", "bad.inter:2"),
        ("short.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t2\n", "short.inter:3"),
        ("bad.csv", "userId,movieId,rating,timestamp\n1,2,3,1260759144\n1,2,4,yesterday\n", "bad.csv:3"),
        ("bad.txt", "1 2 3\n" * 20 + "1 2 x\n", "bad.txt:21"),
        ("nohead.inter", "a:token\tb:token\n1\t2\n", "nohead.inter:1"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path: Path, name: str, text: str, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        load_dataset(_write(tmp_path / name, text))


def test_ambiguous_folder_and_missing_path(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "1 2 1\n")
    _write(tmp_path / "b.txt", "1 2 1\n")
    with pytest.raises(ValueError, match="cannot tell"):
        load_dataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")


def test_iter_events_time_ordered_and_stable(tmp_path: Path) -> None:
    _write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n1,a,4,200\n2,b,2.5,100\n3,c,5,200\n")
    events = list(iter_events(tmp_path / "r.csv"))
    assert [(e["user_id"], e["item_id"], e["ts"], e["value"]) for e in events] == [
        ("2", "b", 100_000, 2.5),
        ("1", "a", 200_000, 4.0),
        ("3", "c", 200_000, 5.0),
    ]
    assert {e["type"] for e in events} == {"rating"}


def test_iter_events_without_timestamps_keeps_file_order(tmp_path: Path) -> None:
    _write(tmp_path / "train.txt", "u1 i1 1\nu2 i2 1\n")
    _write(tmp_path / "test.txt", "u1 i3 1\n")
    events = list(iter_events(tmp_path))
    assert [(e["user_id"], e["item_id"], e["type"]) for e in events] == [
        ("u1", "i1", "click"),
        ("u2", "i2", "click"),
        ("u1", "i3", "click"),
    ]
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts) and len(set(ts)) == 3 and ts[0] >= 631_152_000_000  # epoch ms after 1990
    assert all("value" not in e for e in events)
    counts = list(iter_events(_write(tmp_path / "plays" / "p.txt", "u i 30\n")))
    assert counts[0]["type"] == "view"


def test_iter_profiles_coarsens(recbole_dir: Path) -> None:
    profiles = list(iter_profiles(recbole_dir))
    assert profiles[0] == {
        "user_id": "10",
        "attributes": {"age_band": "18-24", "gender": "M", "occupation": "technician", "region": "8"},
    }
    assert profiles[1]["attributes"]["age_band"] == "45-54"
    assert all("zip_code" not in p["attributes"] for p in profiles)
    assert list(iter_profiles(_write(recbole_dir.parent / "x.txt", "1 2 1\n"))) == []


@pytest.mark.parametrize(
    ("age", "band"), [("7", "<18"), ("18", "18-24"), ("34", "25-34"), ("54", "45-54"), ("55", "55+"), ("n/a", "n/a")]
)
def test_age_band(age: str, band: str) -> None:
    assert age_band(age) == band


def test_profile_attributes_drops_empty_values() -> None:
    assert profile_attributes({"age": "", "zip": "t8h1n", "country": "CA"}) == {"region": "T", "country": "CA"}
