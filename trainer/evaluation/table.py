"""A plain-text table of a ``trainer.evaluate.run_evaluation`` result (``recd evaluate``).

One row per model or baseline, one column per figure any of them reports, in
a fixed order: full-ranking ``recall@K`` / ``ndcg@K``, sampled ``hr@K_sampled``
/ ``ndcg@K_sampled``, ``coverage``, ``tail_share``, ``auc``, any other figure,
``fit_s``, ``eval_s``, the ``users`` / ``test_pairs`` counts and ``device``.
Figures are printed with 4 decimals, counts as integers, and a figure a
model lacks (or one that is not finite) as ``-``. Tuned ``params`` (a dict)
stay in the JSON form only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

__all__ = ["MISSING", "format_table"]

MISSING = "-"
_COUNTS = frozenset({"users", "test_pairs"})
_FULL = re.compile(r"(recall|ndcg)@(\d+)")
_SAMPLED = re.compile(r"(hr|ndcg)@(\d+)_sampled")
_FIXED = {"coverage": 2, "tail_share": 3, "auc": 4, "fit_s": 6, "eval_s": 7, "users": 8, "test_pairs": 9, "device": 10}
_OTHER = 5  # rank of a figure this module does not know (after auc, before fit_s)


def format_table(result: Mapping[str, Any]) -> str:
    """``run_evaluation``'s result as aligned plain text: header lines, column names, a rule, one row per model."""
    models: Mapping[str, Mapping[str, Any]] = result.get("models") or {}
    columns = _columns(models.values())
    rows = [
        [str(name), *(_cell(column, figures.get(column)) for column in columns)] for name, figures in models.items()
    ]
    return "\n".join([*_header(result), "", *_align(["model", *columns], rows)]) + "\n"


def _header(result: Mapping[str, Any]) -> list[str]:
    """Dataset and protocol, then the split's counts (and plot files, where there are any)."""

    def get(key: str) -> str:
        value = result.get(key)
        return MISSING if value is None else str(value)

    lines = [
        f"dataset: {get('dataset')}   protocol: {get('protocol')}",
        f"users: {get('n_users')}   items: {get('n_items')}   train rows: {get('n_train')}"
        f"   test rows: {get('n_test')}   k: {get('k')}",
    ]
    plots = result.get("plots")
    if plots:
        lines.append("plots: " + ", ".join(str(p) for p in plots))
    return lines


def _columns(models: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every key holding a number or a string in any model's figures, in the module docstring's order."""
    keys: dict[str, None] = {}
    for figures in models:
        keys.update((k, None) for k, v in figures.items() if _is_number(v) or isinstance(v, str))
    return sorted(keys, key=_column_order)


def _column_order(key: str) -> tuple[int, int, int, str]:
    """(group, K, recall/hr before ndcg, name): full-ranking by K, then sampled by K, then the rest."""
    for group, pattern in enumerate((_FULL, _SAMPLED)):
        match = pattern.fullmatch(key)
        if match:
            return group, int(match.group(2)), int(match.group(1) == "ndcg"), key
    return _FIXED.get(key, _OTHER) + 2, 0, 0, key


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(column: str, value: object) -> str:
    """One figure as text: counts as integers, other numbers with 4 decimals, missing or not finite as '-'."""
    if isinstance(value, str):
        return value or MISSING
    if not _is_number(value):
        return MISSING
    number = float(value)
    if not math.isfinite(number):
        return MISSING
    if column in _COUNTS or isinstance(value, int):
        return str(round(number))
    return f"{number:.4f}"


def _align(names: list[str], rows: list[list[str]]) -> list[str]:
    """Column names, a rule and the rows: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [names, *rows]) for i in range(len(names))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(names), line(["-" * w for w in widths]), *(line(row) for row in rows)]
