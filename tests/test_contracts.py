"""docs/contracts.md says what the code does: every Redis key recd names and every dead-letter header."""

from __future__ import annotations

import inspect
import re
import zlib
from fnmatch import fnmatchcase
from pathlib import Path

from daemon.ingest import deadletters
from daemon.runtime.keys import Keys

CONTRACTS = (Path(__file__).parent.parent / "docs" / "contracts.md").read_text()
ARGUMENTS: dict[str, object] = {"user_id": "<user>", "item_id": "<item>", "segment": "<segment>", "shard": 7}
NOT_KEYS = {"shard_of", "history_pattern", "history_owner"}  # members of Keys that name no key
SHARDS = 16


def placeholder(keys: Keys, name: str, args: dict[str, object]) -> str:
    """``name`` with its shard tag written ``s{<shard>}``: the shard given, or the user's."""
    user = args.get("user_id")
    shard = args.get("shard", keys.shard_of(str(user)) if user is not None else None)
    tag = f"s{{{shard}}}:"
    if shard is None or not name.startswith(tag):
        assert "shard" not in args, name  # a key of a shard starts with its tag
        return name
    return "s{<shard>}:" + name[len(tag) :]


def code_keys() -> set[str]:
    """Every key name Keys builds, without the prefix, with placeholders for its arguments."""
    keys = Keys("", SHARDS)
    names = set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            names.add(getattr(keys, name))
        elif callable(member):
            params = [p for p in inspect.signature(member).parameters if p != "self"]
            args = {p: ARGUMENTS[p] for p in params}
            names.add(placeholder(keys, getattr(keys, name)(*args.values()), args))
    return names


def documented_keys() -> set[str]:
    table = CONTRACTS.split("## Redis keys", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M))


def test_every_key_the_code_names_is_documented_and_no_other() -> None:
    assert code_keys() == documented_keys()


def test_the_shard_tag_and_the_history_pattern_match_the_documented_keys() -> None:
    """The shard rule the table states, and the history pattern (for SCAN) the code derives from the table's key."""
    keys = Keys("p:", SHARDS)
    assert "`crc32(user) mod RECD_REDIS_SHARDS`" in CONTRACTS
    for user in ("someone", "a|{b}", ""):
        assert keys.shard_of(user) == zlib.crc32(user.encode()) % SHARDS
        history = keys.history(user)
        assert history == f"p:s{{{keys.shard_of(user)}}}:u:{user}:hist"  # `s{<shard>}:u:<user>:hist`
        assert fnmatchcase(history, keys.history_pattern())
        assert keys.history_owner(history.encode()) == (keys.shard_of(user), user)


def test_every_dead_letter_header_is_documented() -> None:
    headers = {v for k, v in vars(deadletters).items() if k.isupper() and isinstance(v, str) and v.startswith("recd.")}
    assert len(headers) == 9
    for header in headers:
        assert f"`{header}`" in CONTRACTS, header
