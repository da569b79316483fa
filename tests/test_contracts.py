"""docs/contracts.md says what the code does: every Redis key recd names and every dead-letter header."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from daemon.ingest import deadletters
from daemon.runtime.keys import Keys

CONTRACTS = (Path(__file__).parent.parent / "docs" / "contracts.md").read_text()
ARGUMENTS = {"user_id": "<user>", "item_id": "<item>", "segment": "<segment>"}


def code_keys() -> set[str]:
    """Every key name Keys builds, without the prefix, with placeholders for its argument."""
    keys = Keys("")
    names = set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name == "user_prefix":
            continue
        if isinstance(member, property):
            names.add(getattr(keys, name))
        elif callable(member):
            (arg,) = [p for p in inspect.signature(member).parameters if p != "self"]
            names.add(getattr(keys, name)(ARGUMENTS[arg]))
    return names


def documented_keys() -> set[str]:
    table = CONTRACTS.split("## Redis keys", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M))


def test_every_key_the_code_names_is_documented_and_no_other() -> None:
    assert code_keys() == documented_keys()


def test_every_dead_letter_header_is_documented() -> None:
    headers = {v for k, v in vars(deadletters).items() if k.isupper() and isinstance(v, str) and v.startswith("recd.")}
    assert len(headers) == 9
    for header in headers:
        assert f"`{header}`" in CONTRACTS, header
