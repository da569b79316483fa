"""The changed-user queues on a real Redis (single and cluster): order, leases, histories read with the
claim, and claims spread over the shards. The order tests use one shard (``Keys(prefix, 1)``): claim.lua's
order is per shard."""

from __future__ import annotations

from collections import defaultdict

from daemon.runtime.keys import Keys, text
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.state import StateReader, each_shard
from daemon.serve.wire import RoutedCommands
from daemon.serve.workqueue import WorkQueue


def one_shard(keys: Keys) -> Keys:
    """The test's prefix with every user in shard 0."""
    return Keys(keys.prefix, 1)


def ack(topology: Topology, queue: WorkQueue, users: list[str]) -> None:
    acks = RoutedCommands(topology)
    queue.ack(acks, users)
    acks.send()


def test_fresh_changes_come_oldest_first_before_swap_refreshes(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    keys = one_shard(keys)
    rclient.zadd(keys.dirty(0), {"late": 2000.0, "early": 1000.0})
    rclient.zadd(keys.swap_queue(0), {"idle": -500.0})
    claims = WorkQueue(topology, keys).claim(10, now_ms=5000)
    assert [(c.user_id, c.score, c.swap) for c in claims] == [
        ("early", 1000.0, False),
        ("late", 2000.0, False),
        ("idle", -500.0, True),
    ]
    assert rclient.zcard(keys.dirty(0)) == 0 and rclient.zcard(keys.dirty_inflight(0)) == 3


def test_an_expired_lease_returns_the_user_and_an_ack_ends_it(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    keys = one_shard(keys)
    queue = WorkQueue(topology, keys, lease_ms=1000)
    rclient.zadd(keys.dirty(0), {"u1": 10.0, "u2": 20.0})
    assert [c.user_id for c in queue.claim(2, now_ms=100)] == ["u1", "u2"]
    ack(topology, queue, ["u2"])
    assert queue.claim(5, now_ms=500) == []  # u1's lease runs to 1100
    queue.reset_pacing()  # the empty shard would otherwise wait its back-off
    assert [c.user_id for c in queue.claim(5, now_ms=1200)] == ["u1"]  # the worker died: u1 is served again


def test_claim_with_history_returns_each_users_blob(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    keys = one_shard(keys)
    rclient.set(keys.history("a|{b}"), b"\x00" * 12)
    rclient.set(keys.history("c"), b"\x01" * 24)
    rclient.zadd(keys.dirty(0), {"a|{b}": 1.0, "c": 2.0, "none": 3.0})
    queue = WorkQueue(topology, keys)
    claims = queue.claim(3, now_ms=10, with_history=True)
    assert [(c.user_id, c.history) for c in claims] == [("a|{b}", b"\x00" * 12), ("c", b"\x01" * 24), ("none", None)]
    ack(topology, queue, ["a|{b}", "c", "none"])
    rclient.zadd(keys.dirty(0), {"a|{b}": 4.0, "c": 5.0, "none": 6.0})
    again = WorkQueue(topology, keys).claim(3, now_ms=20)
    assert [c.user_id for c in again] == ["a|{b}", "c", "none"] and all(c.history is None for c in again)


def test_a_claim_bigger_than_one_lease_command_leases_everyone(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    keys = one_shard(keys)
    rclient.zadd(keys.dirty(0), {f"u{k}": float(k) for k in range(2500)})
    claims = WorkQueue(topology, keys, lease_ms=1000).claim(2500, now_ms=0)
    assert len(claims) == 2500 and rclient.zcard(keys.dirty_inflight(0)) == 2500
    assert rclient.zrange(keys.dirty_inflight(0), 0, -1, withscores=True)[-1][1] == 1000.0  # type: ignore[index]


def test_a_user_another_worker_holds_stays_queued_until_that_worker_acks(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    keys = one_shard(keys)
    first, second = WorkQueue(topology, keys, lease_ms=1000), WorkQueue(topology, keys, lease_ms=1000)
    rclient.zadd(keys.dirty(0), {"busy": 10.0})
    assert [c.user_id for c in first.claim(1, now_ms=100)] == ["busy"]
    rclient.zadd(keys.dirty(0), {"busy": 30.0, "idle": 20.0})  # a change while the first worker serves it
    assert [c.user_id for c in second.claim(5, now_ms=200)] == ["idle"]  # busy is skipped, not lost
    assert rclient.zscore(keys.dirty(0), "busy") == 30.0
    ack(topology, first, ["busy"])
    second.reset_pacing()
    claims = second.claim(5, now_ms=300)
    assert [(c.user_id, c.score) for c in claims] == [("busy", 30.0)]


def test_a_claim_fills_up_past_held_users(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    keys = one_shard(keys)
    queue = WorkQueue(topology, keys, lease_ms=1000)
    rclient.zadd(keys.dirty(0), {f"u{i:04d}": float(i) for i in range(2500)})
    held = [c.user_id for c in queue.claim(1500, now_ms=0)]
    rclient.zadd(keys.dirty(0), dict.fromkeys(held, 0.0))  # every held user changed again, ahead in the queue
    rclient.zadd(keys.swap_queue(0), {held[0]: -1.0, "refresh": -2.0})
    claims = queue.claim(1200, now_ms=10)
    assert [c.user_id for c in claims] == [f"u{i:04d}" for i in range(1500, 2500)] + ["refresh"]
    assert rclient.zcard(keys.dirty(0)) == 1500 and rclient.zrange(keys.swap_queue(0), 0, -1) == [held[0].encode()]


def test_a_user_in_both_queues_is_claimed_once(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    """A fresh change and a swap refresh for one user: one claim (the fresh one); the refresh is dropped,
    since that claim serves the user with the model the worker now holds."""
    keys = one_shard(keys)
    rclient.zadd(keys.dirty(0), {"both": 10.0, "fresh": 20.0})
    rclient.zadd(keys.swap_queue(0), {"both": -900.0, "idle": -800.0})
    claims = WorkQueue(topology, keys).claim(10, now_ms=100)
    assert [(c.user_id, c.swap) for c in claims] == [("both", False), ("fresh", False), ("idle", True)]
    assert rclient.zcard(keys.swap_queue(0)) == 0 and rclient.zcard(keys.dirty_inflight(0)) == 3


def test_a_model_versions_refresh_is_queued_once_across_replicas(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    keys = one_shard(keys)
    rclient.zadd(keys.active(0), {"recent": 9000.0, "older": 8000.0, "dormant": 1000.0})
    first, restarted = WorkQueue(topology, keys), WorkQueue(topology, keys)
    assert first.enqueue_refresh("v1", since_ms=5000) == 2  # served since 5000 (wall ms)
    assert rclient.zrange(keys.swap_queue(0), 0, -1, withscores=True) == [(b"recent", -9000.0), (b"older", -8000.0)]
    rclient.delete(keys.swap_queue(0))
    assert restarted.enqueue_refresh("v1", since_ms=5000) == 0  # a replica (re)starting on v1: already queued
    assert rclient.zcard(keys.swap_queue(0)) == 0
    assert restarted.enqueue_refresh("v2", since_ms=0) == 3


def by_shard(keys: Keys, users: list[str]) -> dict[int, set[str]]:
    out: defaultdict[int, set[str]] = defaultdict(set)
    for user in users:
        out[keys.shard_of(user)].add(user)
    return out


def zsets(topology: Topology, keys: Keys, key_of: str) -> list[dict[str, float]]:
    """Per shard, the zset ``getattr(keys, key_of)(shard)`` as {member: score}."""
    rows = each_shard(topology, keys, lambda p, s: p.zrange(getattr(keys, key_of)(s), 0, -1, withscores=True))
    return [{text(m): float(v) for m, v in row} for row in rows]


def test_claims_spread_over_shards_lease_and_ack_per_shard(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    users = [f"u{k}" for k in range(300)]
    for k, user in enumerate(users):
        rclient.zadd(keys.dirty(keys.shard_of(user)), {user: float(k)})
    queue = WorkQueue(topology, keys, lease_ms=1000)
    assert queue.depth() == 300 and len(by_shard(keys, users)) == keys.shards
    claims = queue.claim(1000, now_ms=0)
    assert sorted(c.user_id for c in claims) == sorted(users)  # every queued user, once
    shards = [keys.shard_of(c.user_id) for c in claims]
    runs = [s for k, s in enumerate(shards) if k == 0 or shards[k - 1] != s]
    assert len(runs) == keys.shards  # shard by shard...
    for shard in range(keys.shards):  # ...each shard's queue in score order
        scores = [c.score for c in claims if keys.shard_of(c.user_id) == shard]
        assert scores == sorted(scores)
    assert queue.depth() == 0
    leases = zsets(topology, keys, "dirty_inflight")
    assert leases == [dict.fromkeys(by_shard(keys, users)[s], 1000.0) for s in range(keys.shards)]
    acked = users[::2]
    ack(topology, queue, acked)  # one ZREM per shard, sent to the node that owns it
    left = by_shard(keys, users[1::2])
    assert [set(lease) for lease in zsets(topology, keys, "dirty_inflight")] == [left[s] for s in range(keys.shards)]
    assert StateReader(topology, keys).queued() == 150
    queue.reset_pacing()
    again = queue.claim(1000, now_ms=1500)  # the rest's leases expired: they come back, the acked ones do not
    assert sorted(c.user_id for c in again) == sorted(users[1::2])


def test_small_claims_visit_every_shard_in_one_round(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    """A step asks a few shards: the deepest queues and the next ones of the worker's rotation. The rotation
    goes on where the last step left it, so a change in any shard waits at most one round of steps."""
    keys = Keys(keys.prefix, 64)
    users, k = {}, 0
    while len(users) < keys.shards:  # one queued user in every shard
        users.setdefault(keys.shard_of(f"u{k}"), f"u{k}")
        k += 1
    for shard, user in users.items():
        rclient.zadd(keys.dirty(shard), {user: 1.0})
    queue = WorkQueue(topology, keys)
    claimed: set[str] = set()
    per_step = 4  # claim(64) asks 64 // MIN_PER_SHARD = 4 shards: 2 deepest, 2 of the rotation
    for _ in range(keys.shards // (per_step // 2)):
        claimed.update(c.user_id for c in queue.claim(64, now_ms=0))
        queue.reset_pacing()  # an empty shard's back-off aside: the order alone is tested
    assert claimed == set(users.values())
