"""ingest.lua's batch paths against a real Redis: appending a user's events in one go (and
falling back to one insert each), segment lookups shared within a batch, exact scores, TTLs."""

from __future__ import annotations

import random
import zlib

import pytest
import redis

from bench.groundtruth import replay
from daemon.ingest.store import RedisStore
from daemon.runtime.keys import Keys
from daemon.runtime.options import store_options
from daemon.runtime.profiles import finest_segment
from daemon.runtime.settings import load_settings
from daemon.runtime.state import StateReader
from schemas.events import EVENT_TYPES, InteractionEvent, ProfileEvent

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
WEIGHTS = {
    "view": 1.0,
    "click": 2.0,
    "purchase": 5.0,
    "rating": 4.0,
    "dislike": -3.0,
    "skip": 0.0,
    "like": 0.7,
    "add_to_cart": 0.1,
}
SEGS = ("country", "age")


def make_store(client: redis.Redis, prefix: str, **opts: object) -> RedisStore:
    settings = {"history_len": 5, "history_ttl_s": 0, "event_weights": WEIGHTS, "segment_keys": SEGS, **opts}
    options = store_options(load_settings(environ={}, **settings))
    return RedisStore(client, Keys(prefix), options)


def ev(eid: str, sec: int, user: str = "u1", item: str = "i", etype: str = "view") -> tuple[InteractionEvent, int]:
    return InteractionEvent(eid, user, item, etype, T0 + sec * 1000 + 7, None), T0 + sec


def crc(eid: str) -> int:
    return zlib.crc32(eid.encode()) & 0xFFFFFF


def history(client: redis.Redis, prefix: str, user: str = "u1") -> list[tuple[int, int, str]]:
    hist = StateReader(client, Keys(prefix)).histories_by_item_id([user])[user]
    return [(e.ts, e.crc, item) for item, e in hist]


def test_same_second_events_are_appended_in_crc_order(rclient: redis.Redis, prefix: str) -> None:
    store = make_store(rclient, prefix)
    store.apply_events([ev(f"old{k}", k, item=f"o{k}") for k in range(5)], T0)  # a full history
    ids = [f"new{k}" for k in range(4)]
    assert sorted(ids, key=crc) != ids  # arrival order is not (sec, crc) order
    result = store.apply_events([ev(e, 10, item=e) for e in ids], T0)
    assert (result.applied, result.duplicates, result.stale) == (4, 0, 0)
    new = sorted((T0 // 1000 + 10, crc(e), e) for e in ids)
    assert history(rclient, prefix) == [(T0 // 1000 + 4, crc("old4"), "o4"), *new]


def test_duplicates_and_older_events_in_a_batch(rclient: redis.Redis, prefix: str) -> None:
    store = make_store(rclient, prefix)
    store.apply_events([ev(f"e{k}", 10 + k) for k in range(5)], T0)  # a full history
    batch = [
        ev("n1", 20),
        ev("n2", 21),
        ev("n1", 20),  # the same event twice in one batch
        ev("e4", 14),
    ]  # delivered again, still in the history
    result = store.apply_events(batch, T0)
    assert (result.applied, result.duplicates, result.stale) == (2, 2, 0)
    result = store.apply_events([ev("e0", 10), ev("x", 1)], T0)  # e0 was trimmed: older than all now
    assert (result.applied, result.duplicates, result.stale) == (0, 0, 2)
    assert [r[1] for r in history(rclient, prefix)] == [crc(e) for e in ("e2", "e3", "e4", "n1", "n2")]


def test_a_shorter_history_setting_trims_on_the_next_append(rclient: redis.Redis, prefix: str) -> None:
    make_store(rclient, prefix).apply_events([ev(f"e{k}", k) for k in range(5)], T0)
    assert make_store(rclient, prefix, history_len=3).apply_events([ev("n", 9)], T0).applied == 1
    assert [r[1] for r in history(rclient, prefix)] == [crc("e3"), crc("e4"), crc("n")]


def test_matches_reference_with_bursts_duplicates_and_profiles(rclient: redis.Redis, prefix: str) -> None:
    rng = random.Random(11)
    users = [f"u{k}" for k in range(5)]
    profiles = {
        "u0": {"country": "US", "age": "25-34"},
        "u1": {"country": "US", "age": "25-34"},
        "u2": {"country": "D|E", "age": "a\nb"},
        "u3": {"age": "18-24"},
    }  # u3: no segment, u4: none
    events = [
        ev(
            f"e{k}",
            rng.randrange(40),
            user=rng.choice(users),
            item=f"i{rng.randrange(9)}",
            etype=rng.choice(EVENT_TYPES),
        )
        for k in range(300)
    ]
    delivered, pos = [], 0
    while pos < len(events):  # bursts per user, re-deliveries, duplicates inside a batch
        step = rng.randrange(1, 30)
        chunk = events[max(0, pos - rng.randrange(0, 20)) : pos + step]
        delivered.append(chunk + rng.sample(chunk, min(2, len(chunk))))
        pos += step
    store = make_store(rclient, prefix)
    store.apply_profiles([(ProfileEvent(u, a, T0), T0) for u, a in profiles.items()])
    results = [store.apply_events(batch, T0) for batch in delivered]
    docs = [
        {"event_id": e.event_id, "user_id": e.user_id, "item_id": e.item_id, "type": e.type, "ts": e.ts}
        for batch in delivered
        for e, _ in batch
    ]
    segs = {u: finest_segment(a, SEGS) for u, a in profiles.items()}
    expected = replay(docs, 5, WEIGHTS, segment_of=segs)
    assert sum(r.applied for r in results) == expected.applied
    assert sum(r.duplicates for r in results) == expected.duplicates
    assert sum(r.stale for r in results) == expected.stale
    pop = {k.decode(): v for k, v in rclient.zrange(Keys(prefix).popularity, 0, -1, withscores=True)}
    assert pop == pytest.approx(dict(expected.popularity))
    got = StateReader(rclient, Keys(prefix)).histories_by_item_id(users)
    assert {u: [(e.ts, e.crc, item) for item, e in h] for u, h in got.items() if h} == expected.histories
    for seg, pop in expected.segments.items():
        stored = {k.decode(): v for k, v in rclient.zrange(Keys(prefix).segment(seg), 0, -1, withscores=True)}
        assert stored == pytest.approx(dict(pop))
    assert {s.decode() for s in rclient.smembers(Keys(prefix).segments)} == set(expected.segments)


def test_segments_follow_profile_changes_between_batches(rclient: redis.Redis, prefix: str) -> None:
    store = make_store(rclient, prefix)
    keys = Keys(prefix)
    store.apply_events([ev("a", 1, item="x", etype="click")], T0)  # before any profile: no segment
    store.apply_profiles(
        [(ProfileEvent("u1", {"country": "US"}, T0), T0), (ProfileEvent("u2", {"country": "US"}, T0), T0)]
    )
    store.apply_events([ev("b", 2, item="x"), ev("c", 2, user="u2", item="x")], T0)  # one chain, two users
    store.apply_profiles([(ProfileEvent("u1", {"country": "FR", "age": "55+"}, T0 + 1), T0)])
    store.apply_events([ev("d", 3, item="x", etype="purchase")], T0)
    assert rclient.zscore(keys.segment("country=US"), "x") == 2.0
    assert rclient.zscore(keys.segment("country=FR|age=55+"), "x") == 5.0
    assert {s.decode() for s in rclient.smembers(keys.segments)} == {"country=US", "country=FR|age=55+"}


def test_fractional_weight_sums_are_exact(rclient: redis.Redis, prefix: str) -> None:
    store = make_store(rclient, prefix, segment_keys=())
    batch = [ev(f"e{k}", k, user=f"u{k % 3}", item="x", etype="add_to_cart") for k in range(7)]
    batch += [ev(f"l{k}", k, item="y", etype="like") for k in range(3)]
    store.apply_events(batch, T0)
    store.apply_events([ev("z", 9, item="x", etype="add_to_cart")], T0)
    x = 0.0
    for _ in range(7):
        x += 0.1
    assert rclient.zscore(Keys(prefix).popularity, "x") == x + 0.1  # 0.7999999999999999, as ZINCRBY sums
    assert rclient.zscore(Keys(prefix).popularity, "y") == 0.7 + 0.7 + 0.7


@pytest.mark.parametrize("ttl", [0, 3600])
def test_ttls_after_appending(rclient: redis.Redis, prefix: str, ttl: int) -> None:
    store = make_store(rclient, prefix, history_ttl_s=ttl)
    keys = Keys(prefix)
    store.apply_profiles([(ProfileEvent("u1", {"country": "US"}, T0), T0)])
    store.apply_events([ev(f"e{k}", k) for k in range(5)], T0)
    rclient.expire(keys.history("u1"), 10)
    rclient.expire(keys.profile("u1"), 10)
    store.apply_events([ev("n", 9)], T0)  # appended to a full history
    hist_ttl, prof_ttl = rclient.ttl(keys.history("u1")), rclient.ttl(keys.profile("u1"))
    if ttl:
        assert 3500 < hist_ttl <= 3600 and 3500 < prof_ttl <= 3600
    else:  # a history written without a TTL setting has none; the profile's is left alone
        assert hist_ttl == -1 and 0 < prof_ttl <= 10


def test_every_user_of_a_large_batch_is_queued(rclient: redis.Redis, prefix: str) -> None:
    store = make_store(rclient, prefix)  # more users than one ZADD takes (ingest.lua's CHUNK)
    batch = [(InteractionEvent(f"e{k}", f"u{k}", "i", "view", T0, None), T0 + k) for k in range(1200)]
    store.apply_events(batch, T0)
    queued = {m.decode(): s for m, s in rclient.zrange(Keys(prefix).dirty, 0, -1, withscores=True)}
    assert queued == {f"u{k}": float(T0 + k) for k in range(1200)}
