"""File-level parsing behind ``trainer.datasets``: finding files, detecting the
format, reading rows into a ``Table`` with precise ``path:line`` errors."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

KINDS = ("rating", "count", "binary")
FORMATS = ("recbole", "csv", "triples", "adjacency")
USER_COLS = ("user_id", "userid", "user", "uid", "customer_id", "reviewerid", "reviewer_id", "visitorid")
ITEM_COLS = (
    "item_id",
    "itemid",
    "item",
    "movieid",
    "movie_id",
    "iid",
    "product_id",
    "productid",
    "asin",
    "artistid",
    "artist_id",
    "book_id",
    "bookid",
    "track_id",
    "id",
)
RATING_COLS = ("rating", "ratings", "score", "stars")
COUNT_COLS = ("weight", "count", "plays", "playcount", "play_count", "clicks", "quantity")
BINARY_COLS = ("label", "clicked")
TS_COLS = ("timestamp", "ts", "time", "datetime", "unix_timestamp", "date")
TITLE_COLS = ("title", "movie_title", "name", "item_name", "book_title", "original_title")
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "test": "test"}
DATA_SUFFIXES = (".inter", ".csv", ".tsv", ".txt", ".dat", ".data", "")
PREFERRED = (
    "ratings.csv",
    "ratings.dat",
    "ratings.txt",
    "user_artists.dat",
    "interactions.csv",
    "interactions.txt",
    "interactions.tsv",
    "u.data",
)
METADATA = (
    "artists.dat",
    "tags.dat",
    "user_friends.dat",
    "user_taggedartists.dat",
    "books.csv",
    "movies.csv",
    "items.csv",
    "items.tsv",
    "items.txt",
    "users.csv",
    "tags.csv",
    "links.csv",
    "readme.txt",
)
TITLE_FILES = ("artists.dat", "items.csv", "items.tsv", "items.txt", "movies.csv")
SNIFF_LINES = 2000


@dataclass
class Table:
    """Rows of one interaction file as columns of raw values."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # the numeric column; 1.0 where there is none
    ts: list[int] = field(default_factory=list)  # epoch ms; 0 where there is none
    kind: str = "binary"
    has_ts: bool = False
    titles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Columns:
    user: int
    item: int
    value: int | None = None
    ts: int | None = None
    title: int | None = None
    kind: str | None = None  # decided by a column name; None: decide from the values


def find_interaction_files(path: Path, fmt: str | None) -> dict[str, Path]:
    """{"all": file} or {"train": f, "test": f[, "valid": f]} for a file or folder."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if path.is_file():
        return {"all": path}
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset at {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    splits: dict[str, Path] = {}
    for f in files:
        stem = f.stem.lower().rsplit(".", 1)[-1]  # "ml-100k.train.inter" -> "train"
        if stem in SPLIT_NAMES and SPLIT_NAMES[stem] not in splits:
            splits[SPLIT_NAMES[stem]] = f
    if "train" in splits and "test" in splits:
        return splits
    inter = [f for f in files if f.suffix == ".inter"]
    if inter:
        named = [f for f in inter if f.stem == path.name]
        return {"all": (named or inter)[0]}
    for name in PREFERRED:
        if (path / name).is_file():
            return {"all": path / name}
    candidates = [f for f in files if f.name.lower() not in METADATA and f.suffix != ""]
    if len(candidates) != 1:
        found = ", ".join(f.name for f in candidates) or "none"
        raise ValueError(f"{path}: cannot tell which file holds the interactions (candidates: {found})")
    return {"all": candidates[0]}


def _name(raw: str) -> str:
    """Header cell -> lookup name: "user_id:token" -> "user_id"."""
    return raw.strip().strip('"').split(":", 1)[0].strip().lower()


def _pick(names: list[str], wanted: tuple[str, ...]) -> int | None:
    for w in wanted:
        if w in names:
            return names.index(w)
    return None


def columns_from_header(header: list[str], path: Path) -> Columns:
    """Find the user/item/value/ts/title columns by their (common) names."""
    names = [_name(h) for h in header]
    user = _pick(names, USER_COLS)
    item = _pick([n if i != user else "" for i, n in enumerate(names)], ITEM_COLS)
    if user is None or item is None:
        raise ValueError(f"{path}:1: header {header!r} names no user and item columns")
    value, kind = None, None
    for cols, k in ((RATING_COLS, "rating"), (COUNT_COLS, "count"), (BINARY_COLS, "binary")):
        value = _pick(names, cols)
        if value is not None:
            kind = k
            break
    if value is None:
        kind = "binary"
    return Columns(user, item, value, _pick(names, TS_COLS), _pick(names, TITLE_COLS), kind)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _split_ws(line: str) -> list[str]:
    return line.split("::") if "::" in line else line.split()


def _sniff(path: Path) -> list[str]:
    out: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                out.append(line.rstrip("\r\n"))
                if len(out) >= SNIFF_LINES:
                    break
    if not out:
        raise ValueError(f"{path}: file is empty")
    return out


def _looks_like_header(tokens: list[str]) -> bool:
    names = [_name(t) for t in tokens]
    return any(n in USER_COLS for n in names) and any(n in ITEM_COLS for n in names)


def detect_format(path: Path) -> str:
    """Guess one of FORMATS from the file name and its first lines."""
    if path.suffix == ".inter":
        return "recbole"
    lines = _sniff(path)
    if "," in lines[0] and "\t" not in lines[0]:
        return "csv"
    tokens = [_split_ws(line) for line in lines]
    if tokens[0] and _looks_like_header(tokens[0]):
        return "triples"
    counts = {len(t) for t in tokens}
    if counts <= {3} or counts <= {4}:
        # equal-length lines with a (mostly) numeric 3rd column: weights; a stray bad value errors later
        numeric = sum(_is_number(t[2]) for t in tokens) >= 0.9 * len(tokens)
        return "triples" if numeric else "adjacency"
    return "adjacency"


def read_table(path: Path, fmt: str | None, value_kind: str | None) -> Table:
    """Read one interaction file into a Table."""
    fmt = fmt or detect_format(path)
    if fmt == "recbole":
        table = _read_delimited(path, _tab_rows(path), header_required=True)
    elif fmt == "csv":
        table = _read_delimited(path, _csv_rows(path), header_required=True)
    elif fmt == "triples":
        table = _read_delimited(path, _ws_rows(path), header_required=False)
    else:
        table = _read_adjacency(path)
    if value_kind is not None:
        table.kind = value_kind
    return table


def _tab_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, line.rstrip("\r\n").split("\t")


def _ws_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            tokens = _split_ws(line.strip())
            if tokens and tokens[0] and not tokens[0].startswith("#"):
                yield lineno, tokens


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row


def _number(tok: str, what: str, path: Path, lineno: int) -> float:
    try:
        val = float(tok)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} {tok!r} is not a number") from None
    if not math.isfinite(val):
        raise ValueError(f"{path}:{lineno}: {what} {tok!r} is not finite")
    return val


def parse_ts_ms(tok: str, path: Path, lineno: int) -> int:
    """Epoch seconds or ms (told apart by size) or an ISO-8601 time -> epoch ms."""
    try:
        val = float(tok)
    except ValueError:
        try:
            when = datetime.fromisoformat(tok.strip())
        except ValueError:
            raise ValueError(f"{path}:{lineno}: timestamp {tok!r} is neither a number nor ISO-8601") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    if not math.isfinite(val):
        raise ValueError(f"{path}:{lineno}: timestamp {tok!r} is not finite")
    return round(val * 1000) if abs(val) < 1e11 else int(val)  # < 1e11: seconds (until year 5138)


def _read_delimited(path: Path, rows: Iterator[tuple[int, list[str]]], header_required: bool) -> Table:
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path}: file is empty")
    if header_required or _looks_like_header(first[1]):
        cols = columns_from_header(first[1], path)
        pending: list[tuple[int, list[str]]] = []
    else:
        n = len(first[1])
        cols = Columns(0, 1, 2 if n >= 3 else None, 3 if n >= 4 else None, None, None if n >= 3 else "binary")
        pending = [first]
    table = Table(has_ts=cols.ts is not None)
    need = max(c for c in (cols.user, cols.item, cols.value, cols.ts, cols.title) if c is not None) + 1
    for lineno, fields in itertools.chain(pending, rows):
        _add_row(table, cols, fields, need, path, lineno)
    table.kind = cols.kind or _kind_from_values(table.values)
    return table


def _add_row(table: Table, cols: Columns, fields: list[str], need: int, path: Path, lineno: int) -> None:
    if len(fields) < need:
        raise ValueError(f"{path}:{lineno}: expected at least {need} fields, got {len(fields)}: {fields!r}")
    user, item = fields[cols.user].strip(), fields[cols.item].strip()
    if not user or not item:
        raise ValueError(f"{path}:{lineno}: empty user or item id")
    table.users.append(user)
    table.items.append(item)
    table.values.append(1.0 if cols.value is None else _number(fields[cols.value], "value", path, lineno))
    table.ts.append(0 if cols.ts is None else parse_ts_ms(fields[cols.ts], path, lineno))
    if cols.title is not None and item not in table.titles:
        table.titles[item] = fields[cols.title].strip()


def _kind_from_values(values: list[float]) -> str:
    """Headerless numeric column: {0, 1} -> binary, <= 5 -> rating, else play counts."""
    if not values:
        return "binary"
    distinct = set(values[:100_000])
    if distinct <= {0.0, 1.0}:
        return "binary"
    return "rating" if max(values) <= 5.0 else "count"


def _read_adjacency(path: Path) -> Table:
    table = Table(kind="binary")
    for _, tokens in _ws_rows(path):
        user = tokens[0]
        for item in tokens[1:]:
            table.users.append(user)
            table.items.append(item)
    table.values = [1.0] * len(table.users)
    table.ts = [0] * len(table.users)
    return table


def _sibling(main: Path, suffix: str) -> Path | None:
    """RecBole sibling: "<dir>/ml-100k.inter" -> "<dir>/ml-100k<suffix>" (also for "x.train.inter")."""
    if main.suffix != ".inter":
        return None
    stem = main.name.split(".", 1)[0]
    cand = main.with_name(stem + suffix)
    return cand if cand.is_file() else None


def _read_header_file(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    head = _sniff(path)[0]
    rows = _tab_rows(path) if "\t" in head else _csv_rows(path)
    first = next(rows)
    return [_name(h) for h in first[1]], rows


def read_item_titles(main: Path, tables: dict[str, Table]) -> dict[str, str]:
    """Titles from title columns, a RecBole ``.item`` file or a sibling item file."""
    titles: dict[str, str] = {}
    for t in tables.values():
        titles.update(t.titles)
    files = [_sibling(main, ".item")] + [main.parent / n for n in TITLE_FILES if (main.parent / n).is_file()]
    for f in files:
        if f is None:
            continue
        names, rows = _read_header_file(f)
        id_col = _pick(names, ITEM_COLS)
        title_col = _pick(names, TITLE_COLS)
        if id_col is None or title_col is None:
            continue
        for _, fields in rows:
            if len(fields) > max(id_col, title_col):
                titles.setdefault(fields[id_col].strip(), fields[title_col].strip())
        break
    return titles


def read_user_profiles(main: Path) -> dict[str, dict[str, str]]:
    """Raw profile attributes (strings) from a RecBole ``.user`` sibling; {} when there is none."""
    f = _sibling(main, ".user")
    if f is None:
        return {}
    names, rows = _read_header_file(f)
    user_col = _pick(names, USER_COLS)
    if user_col is None:
        raise ValueError(f"{f}:1: header names no user column")
    profiles: dict[str, dict[str, str]] = {}
    for lineno, fields in rows:
        if len(fields) != len(names):
            raise ValueError(f"{f}:{lineno}: expected {len(names)} fields, got {len(fields)}")
        attrs = {n: v.strip() for i, (n, v) in enumerate(zip(names, fields, strict=True)) if i != user_col}
        profiles[fields[user_col].strip()] = attrs
    return profiles
