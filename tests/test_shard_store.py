"""What virtual shards add to ingest's Redis state, on the single Redis and on the cluster: segments that
move between batches, one item dictionary for every shard and process, the layout check, and every script
call's keys in one slot."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

import daemon.ingest.store as store_module
from daemon.ingest.store import RedisStore, StoreOptions
from daemon.runtime.keys import Keys, text
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.scripts import Call
from daemon.runtime.settings import ConfigError
from daemon.runtime.state import StateReader, check_layout, each_shard
from schemas.events import InteractionEvent, ProfileEvent

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
SEGS = ("country", "age")
OPTIONS = StoreOptions(
    history_len=20,
    history_ttl_s=0,
    trending_half_life_s=86_400,
    rating_threshold=4.0,
    weights={"view": 1.0, "click": 2.0, "purchase": 5.0},
    segment_keys=SEGS,
)


def ev(eid: str, user: str, item: str, etype: str = "view", sec: int = 0) -> tuple[InteractionEvent, int]:
    return InteractionEvent(eid, user, item, etype, T0 + sec * 1000, None), T0


def profile(user: str, attributes: dict[str, str], ts: int) -> tuple[ProfileEvent, int]:
    return ProfileEvent(user, attributes, ts), T0


def test_a_segment_changed_by_another_process_is_corrected_by_the_script(topology: Topology, keys: Keys) -> None:
    ingest, other = RedisStore(topology, keys, OPTIONS), RedisStore(topology, keys, OPTIONS)
    reader = StateReader(topology, keys)
    ingest.apply_profiles([profile("u1", {"country": "US"}, T0)])
    assert ingest.apply_events([ev("a", "u1", "x", "click", 1)], T0).applied == 1
    other.apply_profiles([profile("u1", {"country": "FR", "age": "55+"}, T0 + 1)])  # ingest's cache is stale now
    result = ingest.apply_events([ev("b", "u1", "x", "purchase", 2), ev("c", "u2", "x", "view", 2)], T0)
    assert (result.applied, result.duplicates, result.stale) == (2, 0, 0)  # the resent user counted once
    assert ingest.segments["u1"] == "country=FR|age=55+"  # the cache learned the script's answer
    assert reader.segment_scores("country=US") == {"x": 2.0}  # the click before the change only
    assert reader.segment_scores("country=FR|age=55+") == {"x": 5.0}
    assert reader.segment_names() == {"country=US", "country=FR|age=55+"}
    assert dict(reader.popularity()) == {"x": 8.0} and reader.totals()["applied"] == 3
    fresh = RedisStore(topology, keys, OPTIONS)  # a process that never saw u1's profile
    assert fresh.apply_events([ev("d", "u1", "y", "view", 3)], T0).applied == 1
    assert reader.segment_scores("country=FR|age=55+") == {"x": 5.0, "y": 1.0}
    assert reader.histories_by_item_id(["u1"])["u1"][-1][0] == "y"


def users_in_other_shards(keys: Keys, n: int) -> list[str]:
    """``n`` users, each in a shard of its own."""
    found: dict[int, str] = {}
    for k in range(100_000):
        found.setdefault(keys.shard_of(f"w{k}"), f"w{k}")
        if len(found) == n:
            return list(found.values())
    raise AssertionError("not enough shards")


def test_the_item_dictionary_gives_every_shard_and_process_the_same_numbers(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    first, second = RedisStore(topology, keys, OPTIONS), RedisStore(topology, keys, OPTIONS)
    users = users_in_other_shards(keys, 4)
    items = [f"i{k}" for k in range(12)]
    first.apply_events([ev(f"a{k}", users[k % 2], item) for k, item in enumerate(items[:8])], T0)
    second.apply_events([ev(f"b{k}", users[2 + k % 2], item) for k, item in enumerate(items[4:])], T0)
    stored = {text(i): int(n) for i, n in rclient.hgetall(keys.items).items()}  # type: ignore[union-attr]
    ids = {int(n): text(i) for n, i in rclient.hgetall(keys.item_ids).items()}  # type: ignore[union-attr]
    assert sorted(stored.values()) == list(range(1, 13)) and ids == {n: i for i, n in stored.items()}
    assert first.item_numbers.numbers == {i: stored[i] for i in items[:8]}
    assert second.item_numbers.numbers == {i: stored[i] for i in items[4:]}  # the shared four: the same numbers
    assert first.item_numbers.generation == second.item_numbers.generation == text(rclient.get(keys.item_generation))
    names = StateReader(topology, keys).histories_by_item_id(users)
    assert sorted(item for user in users for item, _ in names[user]) == sorted(items[:8] + items[4:])
    dictionary = [keys.items, keys.item_ids, keys.item_seq, keys.item_first_seen, keys.item_generation]
    assert len({key_slot(k.encode()) for k in dictionary}) == 1


def test_a_lost_dictionary_resets_the_cache_and_ingest_goes_on(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    store = RedisStore(topology, keys, OPTIONS)
    store.apply_events([ev("a", "u1", "x"), ev("b", "u2", "y")], T0)
    before = store.item_numbers.generation
    rclient.delete(keys.items, keys.item_ids, keys.item_seq, keys.item_first_seen, keys.item_generation)
    result = store.apply_events([ev("c", "u3", "y", sec=1), ev("d", "u3", "z", sec=2)], T0)
    assert (result.applied, result.new_items) == (2, 2)
    assert store.item_numbers.generation == text(rclient.get(keys.item_generation)) != before
    stored = {text(i): int(n) for i, n in rclient.hgetall(keys.items).items()}  # type: ignore[union-attr]
    assert store.item_numbers.numbers == stored and sorted(stored) == ["y", "z"]
    assert [item for item, _ in StateReader(topology, keys).histories_by_item_id(["u3"])["u3"]] == ["y", "z"]
    assert store.apply_events([ev("e", "u1", "x", sec=3)], T0).new_items == 1  # x is numbered again
    assert store.item_numbers.numbers["x"] == int(rclient.hget(keys.items, "x"))  # type: ignore[arg-type]


def test_the_layout_check_refuses_another_shard_count_and_the_old_layout(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    check_layout(topology, keys)  # a fresh prefix becomes ours...
    assert text(rclient.get(keys.layout)) == f"sharded {keys.shards}"
    check_layout(topology, keys)  # ...and stays so
    with pytest.raises(ConfigError, match="RECD_REDIS_SHARDS"):
        check_layout(topology, Keys(keys.prefix, keys.shards * 2))
    old = Keys(keys.prefix + "old:", keys.shards)
    rclient.hset(f"{old.prefix}items", "i1", 1)  # the item hash of the layout before virtual shards
    with pytest.raises(ConfigError, match="layout before virtual shards"):
        check_layout(topology, old)
    assert rclient.get(old.layout) is None  # nothing marked


def recorded_calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every script call the store makes, from now on."""
    calls: list[Call] = []
    real = store_module.run

    def run(topology: Topology, batch: list[Call], wait: bool = True) -> list[Any]:
        calls.extend(batch)
        return real(topology, batch, wait)

    monkeypatch.setattr(store_module, "run", run)
    return calls


def shard_key_names(keys: Keys, shard: int, users: list[str], segments: set[str]) -> set[str]:
    """Every key of ``shard`` that ingest and serving touch, for these users and segments."""
    names = {keys.popularity(shard), keys.trending(shard), keys.trending_epoch(shard), keys.segments(shard)}
    names |= {keys.active(shard), keys.dirty(shard), keys.dirty_inflight(shard), keys.swap_queue(shard)}
    names |= {keys.stats(shard)} | {keys.segment(shard, s) for s in segments}
    names |= {keys.segment_cache(shard, s) for s in segments}
    return names | {f(u) for u in users if keys.shard_of(u) == shard for f in (keys.history, keys.profile)}


def test_every_script_call_and_every_shard_keeps_to_one_slot(
    rclient: RedisClient, topology: Topology, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = recorded_calls(monkeypatch)
    store = RedisStore(topology, keys, OPTIONS)
    users = [f"u{k}" for k in range(2000)]
    countries = ("US", "FR", "DE")
    store.apply_profiles([profile(u, {"country": countries[k % 3], "age": "30"}, T0) for k, u in enumerate(users)])
    store.apply_events([ev(f"e{k}", u, f"i{k % 50}", "click") for k, u in enumerate(users)], T0)
    assert len(calls) == 2 * keys.shards + 1  # profiles and events: one call per shard each; the item numbers
    for call in calls:
        assert len({key_slot(k.encode()) for k in call.keys}) == 1, call.script.name
    segments = StateReader(topology, keys).segment_names()
    assert segments == {f"country={c}|age=30" for c in countries}
    touched = {keys.items, keys.item_ids, keys.item_seq, keys.item_first_seen, keys.item_generation}
    for shard in range(keys.shards):
        names = shard_key_names(keys, shard, users, segments)
        assert {key_slot(k.encode()) for k in names} == {key_slot(keys.stats(shard).encode())}
        touched |= names
    stored = {text(k) for k in rclient.scan_iter(match=keys.prefix + "*", count=1000)}
    assert stored <= touched and len(stored) > 2 * len(users)  # nothing outside the slots checked above


def test_the_users_of_a_batch_spread_over_every_shard(topology: Topology, keys: Keys) -> None:
    store = RedisStore(topology, keys, OPTIONS)
    result = store.apply_events([ev(f"e{k}", f"user-{k}", "i") for k in range(2000)], T0)
    assert result.applied == 2000
    queued = each_shard(topology, keys, lambda p, s: p.zcard(keys.dirty(s)))
    applied = each_shard(topology, keys, lambda p, s: p.hget(keys.stats(s), "applied"))
    assert sum(queued) == 2000 == sum(int(n) for n in applied)
    fair = 2000 / keys.shards
    assert all(0.5 * fair < n < 1.5 * fair for n in queued), queued  # crc32 spreads ids that differ a little
    ports = {topology.node_of(keys.stats(s)).connection_pool.connection_kwargs["port"] for s in range(keys.shards)}
    assert len(ports) == len(topology.primaries())  # and the shards over every primary
