"""The batch Lua script against a real Redis (single and cluster): effects, bounds, idempotence."""

from __future__ import annotations

import random

import pytest

from bench.groundtruth import replay
from daemon.ingest.store import RedisStore
from daemon.runtime.history import event_weight
from daemon.runtime.keys import Keys, text
from daemon.runtime.options import store_options
from daemon.runtime.profiles import segment_chain
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import load_settings
from daemon.runtime.state import StateReader, each_shard
from daemon.serve.coldstart import ColdStart
from schemas.events import EVENT_TYPES, InteractionEvent, ProfileEvent
from tests.redisdump import dump

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
WEIGHTS = {"view": 1.0, "click": 2.0, "purchase": 5.0, "rating": 4.0, "dislike": -3.0, "skip": 0.0}


def make_store(topology: Topology, keys: Keys, **opts: object) -> RedisStore:
    settings = {
        "history_len": 5,
        "history_ttl_s": 0,
        "event_weights": WEIGHTS,
        "segment_keys": ("country", "age"),
        **opts,
    }
    options = store_options(load_settings(environ={}, **settings))
    return RedisStore(topology, keys, options)


def ev(
    i: int,
    user: str = "u1",
    item: str | None = None,
    etype: str = "view",
    ts: int | None = None,
    value: float | None = None,
) -> tuple[InteractionEvent, int]:
    return InteractionEvent(f"e{i}", user, item or f"i{i}", etype, T0 + i * 1000 if ts is None else ts, value), T0


def shard_mate(keys: Keys, user: str) -> str:
    """Another user in ``user``'s shard (one script, one trending epoch)."""
    return next(f"m{k}" for k in range(10_000) if keys.shard_of(f"m{k}") == keys.shard_of(user))


def popularity(store: RedisStore) -> dict[str, float]:
    """All-time popularity, summed over shards."""
    return dict(StateReader(store.topology, store.keys).popularity())


def trending(store: RedisStore) -> dict[str, float]:
    """Trending summed over shards, each shard's scores brought to the newest epoch (as serving reads it)."""
    return dict(ColdStart(StateReader(store.topology, store.keys), store.options.trending_half_life_s).popular())


def test_history_keeps_newest_in_time_order(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    events = [ev(i) for i in (3, 1, 2, 7, 5, 6, 4)]  # out of order
    assert store.apply_events(events, T0).applied == 7
    hist = StateReader(topology, keys).histories_by_item_id(["u1"])["u1"]
    assert [item for item, _ in hist] == ["i3", "i4", "i5", "i6", "i7"]
    assert [e.ts for _, e in hist] == sorted(e.ts for _, e in hist)


def test_history_keeps_type_and_rating_value(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    store.apply_events([ev(1, etype="purchase"), ev(2, etype="rating", value=4.5), ev(3, etype="rating", value=-2)], T0)
    hist = StateReader(topology, keys).histories(["u1"])["u1"]
    assert [(e.type, e.value) for e in hist] == [("purchase", 0.0), ("rating", 4.5), ("rating", 0.0)]
    assert [e.ts for e in hist] == [(T0 + k * 1000) // 1000 for k in (1, 2, 3)]


def test_replayed_batch_changes_nothing(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    store.apply_profiles([(ProfileEvent("u1", {"country": "US", "age": "25-34"}, T0), T0)])
    events = [
        ev(i, user=f"u{i % 3}", item=f"i{i % 4}", etype=EVENT_TYPES[i % 8], value=float(i % 6)) for i in range(40)
    ]
    first = store.apply_events(events, T0)
    stats = {keys.stats(s).encode() for s in range(keys.shards)}
    before = dump(rclient, keys.prefix)
    again = store.apply_events(events, T0 + 99)
    assert again.applied == 0 and again.duplicates + again.stale == first.applied
    after = dump(rclient, keys.prefix)
    duplicates = sum(int(after.pop(key).get(b"duplicates", 0)) for key in stats & set(after))
    assert duplicates == again.duplicates  # only the counters move
    for key in stats & set(before):
        before.pop(key)
    assert after == before


def test_stale_event_outside_full_window_is_skipped(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    store.apply_events([ev(i) for i in range(10, 15)], T0)
    result = store.apply_events([ev(1)], T0)
    assert (result.applied, result.stale) == (0, 1)
    assert "i1" not in popularity(store)


def test_popularity_trending_and_segments(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    reader = StateReader(topology, keys)
    store.apply_profiles([(ProfileEvent("u1", {"country": "US", "age": "25-34"}, T0), T0)])
    store.apply_events(
        [
            ev(1, item="a", etype="purchase"),
            ev(2, item="a", etype="view"),
            ev(3, item="b", etype="dislike"),
            ev(4, item="c", etype="rating", value=3.0),
            ev(5, item="d", etype="rating", value=4.5),
            ev(6, user="u2", item="b", etype="click"),
        ],
        T0,
    )
    pop = popularity(store)
    assert pop["a"] == 6.0
    assert pop["b"] == 2.0  # the dislike adds nothing
    assert "c" not in pop  # rating below the threshold
    assert pop["d"] == 4.0
    assert reader.segment_scores("country=US|age=25-34")["a"] == 6.0  # the finest segment only
    assert "a" not in reader.segment_scores("country=US")
    assert "b" not in reader.segment_scores("country=US|age=25-34")  # u2 has no profile
    trend = trending(store)
    assert trend["a"] > trend["d"] > trend["b"] > 0
    dirty = each_shard(topology, keys, lambda p, s: p.zrange(keys.dirty(s), 0, -1))
    assert {text(u) for users in dirty for u in users} == {"u1", "u2"}
    assert reader.segment_names() == {"country=US|age=25-34"}


def test_trending_decays_older_events(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys, trending_half_life_s=3600)
    store.apply_events([ev(1, item="old", ts=T0), ev(2, user="u2", item="new", ts=T0 + 7_200_000)], T0)
    trend = trending(store)
    assert trend["new"] == pytest.approx(4 * trend["old"])


def test_trending_rescales_far_future_without_overflow(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys, trending_half_life_s=60)
    later = shard_mate(keys, "u1")  # one shard: its script moves the epoch it wrote x's score against
    store.apply_events([ev(1, item="x", ts=T0)], T0)
    store.apply_events([ev(2, user=later, item="y", ts=T0 + 200 * 60_000)], T0)  # 200 half-lives later
    trend = trending(store)
    assert 0 < trend["y"] < 1e30 and trend["x"] < trend["y"] * 1e-50
    raw = dict(topology.client.zrange(keys.trending(keys.shard_of("u1")), 0, -1, withscores=True))  # type: ignore[arg-type]
    assert 0 < raw[b"y"] < 1e30 and raw[b"x"] < raw[b"y"] * 1e-50  # the stored scores themselves


def test_profile_newest_wins_and_builds_segments(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    r1 = store.apply_profiles([(ProfileEvent("u1", {"country": "DE", "age": "18-24"}, T0 + 10), T0)])
    r2 = store.apply_profiles([(ProfileEvent("u1", {"country": "FR"}, T0), T0)])
    assert (r1.applied, r2.applied, r2.duplicates) == (1, 0, 1)
    prof = StateReader(topology, keys, ("country", "age")).profiles(["u1", "nobody"])
    assert prof["nobody"] is None
    assert prof["u1"] is not None and prof["u1"].attributes == {"country": "DE", "age": "18-24"}
    assert prof["u1"].segments == ["country=DE", "country=DE|age=18-24"]


def test_item_numbers_survive_a_reset_of_the_items_hash(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    store.apply_events([ev(1, item="a"), ev(2, item="b")], T0)
    assert store.item_numbers.numbers == {"a": 1, "b": 2}
    for key in rclient.scan_iter(match=keys.prefix + "*"):  # someone wipes recd's keys
        rclient.delete(key)
    store.apply_events([ev(3, item="b"), ev(4, item="c")], T0)  # cached numbers are now wrong
    hist = StateReader(topology, keys).histories_by_item_id(["u1"])["u1"]
    assert [item for item, _ in hist] == ["b", "c"]
    stored = {text(i): int(n) for i, n in rclient.hgetall(keys.items).items()}  # type: ignore[union-attr]
    assert store.item_numbers.numbers == stored and sorted(stored) == ["b", "c"]
    assert sorted(stored.values()) == [1, 2]  # numbering started again


def test_ttl_applies_to_user_state(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys, history_ttl_s=3600)
    store.apply_events([ev(1)], T0)
    assert 3500 < rclient.ttl(keys.history("u1")) <= 3600  # type: ignore[operator]


def delivered_events(rng: random.Random) -> list[tuple[InteractionEvent, int]]:
    """400 random events, delivered at least once: random chunks re-delivered."""
    events = [
        ev(
            i,
            user=f"u{rng.randrange(6)}",
            item=f"i{rng.randrange(30)}",
            etype=rng.choice(EVENT_TYPES),
            ts=T0 + rng.randrange(100) * 1000,
            value=float(rng.randrange(1, 6)),
        )
        for i in range(400)
    ]
    delivered = []
    pos = 0
    while pos < len(events):
        step = rng.randrange(1, 40)
        back = rng.randrange(0, 30) if rng.random() < 0.4 else 0
        delivered.extend(events[max(0, pos - back) : pos + step])
        pos += step
    return delivered


def test_matches_reference_model_under_random_replays(topology: Topology, keys: Keys) -> None:
    delivered = delivered_events(random.Random(7))
    store = make_store(topology, keys)
    for start in range(0, len(delivered), 37):
        store.apply_events(delivered[start : start + 37], T0)
    docs = [
        {
            "event_id": e.event_id,
            "user_id": e.user_id,
            "item_id": e.item_id,
            "type": e.type,
            "ts": e.ts,
            "value": e.value,
        }
        for e, _ in delivered
    ]
    expected = replay(docs, 5, WEIGHTS)
    reader = StateReader(topology, keys)
    got = reader.histories_by_item_id(sorted(expected.histories))
    assert {u: [(e.ts, e.crc, item) for item, e in h] for u, h in got.items()} == expected.histories
    assert popularity(store) == pytest.approx(dict(expected.popularity))
    totals = reader.totals()
    assert totals["applied"] == expected.applied
    assert totals["duplicates"] + totals["stale"] == expected.duplicates + expected.stale


def test_event_weight_and_segment_chain() -> None:
    assert event_weight("rating", 4.0, WEIGHTS, 4.0) == 4.0
    assert event_weight("rating", 4.0, WEIGHTS, 4.5) == 0.0
    assert segment_chain({"country": "US", "gender": "F"}, ("country", "age", "gender")) == ["country=US"]
    assert segment_chain({"age": "25"}, ("country", "age")) == []


def test_item_name_cache_stays_bounded_and_still_answers(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    rclient.hset(keys.item_ids, mapping={str(n): f"item-{n}" for n in range(1, 11)})
    reader = StateReader(topology, keys, cache_items=4)
    assert {n: reader.item_ids([n])[n] for n in range(1, 11)} == {n: f"item-{n}" for n in range(1, 11)}
    assert len(reader.item_ids([9, 10, 11])) <= 4  # 11 does not exist: left out
    names = reader.item_ids(range(1, 8))  # more than the cache holds at once: all of them still come back
    assert [names[n] for n in range(1, 8)] == [f"item-{n}" for n in range(1, 8)]
