"""ingest.lua's batch paths against a real Redis (single and cluster): appending a user's events in one go (and
falling back to one insert each), segment lookups shared within a batch, exact scores, TTLs."""

from __future__ import annotations

import random
import zlib

import pytest

from bench.groundtruth import replay
from daemon.ingest.store import RedisStore
from daemon.runtime.keys import Keys, text
from daemon.runtime.options import store_options
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import load_settings
from daemon.runtime.state import StateReader, each_shard
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


def make_store(topology: Topology, keys: Keys, **opts: object) -> RedisStore:
    settings = {"history_len": 5, "history_ttl_s": 0, "event_weights": WEIGHTS, "segment_keys": SEGS, **opts}
    options = store_options(load_settings(environ={}, **settings))
    return RedisStore(topology, keys, options)


def ev(eid: str, sec: int, user: str = "u1", item: str = "i", etype: str = "view") -> tuple[InteractionEvent, int]:
    return InteractionEvent(eid, user, item, etype, T0 + sec * 1000 + 7, None), T0 + sec


def crc(eid: str) -> int:
    return zlib.crc32(eid.encode()) & 0xFFFFFF


def history(topology: Topology, keys: Keys, user: str = "u1") -> list[tuple[int, int, str]]:
    hist = StateReader(topology, keys).histories_by_item_id([user])[user]
    return [(e.ts, e.crc, item) for item, e in hist]


def shard_mates(keys: Keys, user: str, n: int) -> list[str]:
    """``user`` and ``n - 1`` other users of its shard (one script, one ZADD, one popularity sum)."""
    mates = (f"m{k}" for k in range(1_000_000) if keys.shard_of(f"m{k}") == keys.shard_of(user))
    return [user] + [next(mates) for _ in range(n - 1)]


def test_same_second_events_are_appended_in_crc_order(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    store.apply_events([ev(f"old{k}", k, item=f"o{k}") for k in range(5)], T0)  # a full history
    ids = [f"new{k}" for k in range(4)]
    assert sorted(ids, key=crc) != ids  # arrival order is not (sec, crc) order
    result = store.apply_events([ev(e, 10, item=e) for e in ids], T0)
    assert (result.applied, result.duplicates, result.stale) == (4, 0, 0)
    new = sorted((T0 // 1000 + 10, crc(e), e) for e in ids)
    assert history(topology, keys) == [(T0 // 1000 + 4, crc("old4"), "o4"), *new]


def test_duplicates_and_older_events_in_a_batch(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
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
    assert [r[1] for r in history(topology, keys)] == [crc(e) for e in ("e2", "e3", "e4", "n1", "n2")]


def test_a_shorter_history_setting_trims_on_the_next_append(topology: Topology, keys: Keys) -> None:
    make_store(topology, keys).apply_events([ev(f"e{k}", k) for k in range(5)], T0)
    assert make_store(topology, keys, history_len=3).apply_events([ev("n", 9)], T0).applied == 1
    assert [r[1] for r in history(topology, keys)] == [crc("e3"), crc("e4"), crc("n")]


def bursts(rng: random.Random, users: list[str]) -> list[list[tuple[InteractionEvent, int]]]:
    """300 random events in batches: bursts per user, re-deliveries, duplicates inside a batch."""
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
    return delivered


def test_matches_reference_with_bursts_duplicates_and_profiles(topology: Topology, keys: Keys) -> None:
    users = [f"u{k}" for k in range(5)]
    profiles = {
        "u0": {"country": "US", "age": "25-34"},
        "u1": {"country": "US", "age": "25-34"},
        "u2": {"country": "D|E", "age": "a\nb"},
        "u3": {"age": "18-24"},
    }  # u3: no segment, u4: none
    delivered = bursts(random.Random(11), users)
    store = make_store(topology, keys)
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
    reader = StateReader(topology, keys)
    assert dict(reader.popularity()) == pytest.approx(dict(expected.popularity))
    got = reader.histories_by_item_id(users)
    assert {u: [(e.ts, e.crc, item) for item, e in h] for u, h in got.items() if h} == expected.histories
    for seg, pop in expected.segments.items():
        assert reader.segment_scores(seg) == pytest.approx(dict(pop))
    assert reader.segment_names() == set(expected.segments)


def test_segments_follow_profile_changes_between_batches(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    reader = StateReader(topology, keys)
    store.apply_events([ev("a", 1, item="x", etype="click")], T0)  # before any profile: no segment
    store.apply_profiles(
        [(ProfileEvent("u1", {"country": "US"}, T0), T0), (ProfileEvent("u2", {"country": "US"}, T0), T0)]
    )
    store.apply_events([ev("b", 2, item="x"), ev("c", 2, user="u2", item="x")], T0)  # one chain, two users
    store.apply_profiles([(ProfileEvent("u1", {"country": "FR", "age": "55+"}, T0 + 1), T0)])
    store.apply_events([ev("d", 3, item="x", etype="purchase")], T0)
    assert reader.segment_scores("country=US")["x"] == 2.0
    assert reader.segment_scores("country=FR|age=55+")["x"] == 5.0
    assert reader.segment_names() == {"country=US", "country=FR|age=55+"}


def test_fractional_weight_sums_are_exact(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys, segment_keys=())
    users = shard_mates(keys, "u1", 3)  # one shard: the script's sums are the whole popularity
    batch = [ev(f"e{k}", k, user=users[k % 3], item="x", etype="add_to_cart") for k in range(7)]
    batch += [ev(f"l{k}", k, item="y", etype="like") for k in range(3)]
    store.apply_events(batch, T0)
    store.apply_events([ev("z", 9, item="x", etype="add_to_cart")], T0)
    x = 0.0
    for _ in range(7):
        x += 0.1
    pop = dict(StateReader(topology, keys).popularity())
    assert pop["x"] == x + 0.1  # 0.7999999999999999, as ZINCRBY sums
    assert pop["y"] == 0.7 + 0.7 + 0.7


@pytest.mark.parametrize("ttl", [0, 3600])
def test_ttls_after_appending(rclient: RedisClient, topology: Topology, keys: Keys, ttl: int) -> None:
    store = make_store(topology, keys, history_ttl_s=ttl)
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


def test_every_user_of_a_large_batch_is_queued(topology: Topology, keys: Keys) -> None:
    store = make_store(topology, keys)
    users = shard_mates(keys, "u0", 1200)  # one shard's script: more users than one ZADD takes (ingest.lua's CHUNK)
    batch = [(InteractionEvent(f"e{k}", user, "i", "view", T0, None), T0 + k) for k, user in enumerate(users)]
    store.apply_events(batch, T0)
    rows = each_shard(topology, keys, lambda p, s: p.zrange(keys.dirty(s), 0, -1, withscores=True))
    queued = {text(m): s for row in rows for m, s in row}
    assert queued == {user: float(T0 + k) for k, user in enumerate(users)}
