"""The changed-user queue on a real Redis: order, leases, and histories read with the claim."""

from __future__ import annotations

import redis

from daemon.runtime.keys import Keys
from daemon.serve.wire import Commands, send
from daemon.serve.workqueue import WorkQueue


def test_fresh_changes_come_oldest_first_before_swap_refreshes(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.zadd(keys.dirty, {"late": 2000.0, "early": 1000.0})
    rclient.zadd(keys.swap_queue, {"idle": -500.0})
    claims = WorkQueue(rclient, keys).claim(10, now_ms=5000)
    assert [(c.user_id, c.score, c.swap) for c in claims] == [
        ("early", 1000.0, False),
        ("late", 2000.0, False),
        ("idle", -500.0, True),
    ]
    assert rclient.zcard(keys.dirty) == 0 and rclient.zcard(keys.dirty_inflight) == 3


def test_an_expired_lease_returns_the_user_and_an_ack_ends_it(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    queue = WorkQueue(rclient, keys, lease_ms=1000)
    rclient.zadd(keys.dirty, {"u1": 10.0, "u2": 20.0})
    assert [c.user_id for c in queue.claim(2, now_ms=100)] == ["u1", "u2"]
    acks = Commands()
    queue.ack(acks, ["u2"])
    send(rclient, acks)
    assert queue.claim(5, now_ms=500) == []  # u1's lease runs to 1100
    assert [c.user_id for c in queue.claim(5, now_ms=1200)] == ["u1"]  # the worker died: u1 is served again


def test_claim_with_history_returns_each_users_blob(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.set(keys.history("a|{b}"), b"\x00" * 12)
    rclient.set(keys.history("c"), b"\x01" * 24)
    rclient.zadd(keys.dirty, {"a|{b}": 1.0, "c": 2.0, "none": 3.0})
    claims = WorkQueue(rclient, keys).claim(3, now_ms=10, with_history=True)
    assert [(c.user_id, c.history) for c in claims] == [("a|{b}", b"\x00" * 12), ("c", b"\x01" * 24), ("none", None)]
    assert all(c.history is None for c in WorkQueue(rclient, keys).claim(3, now_ms=10))


def test_a_claim_bigger_than_one_lease_command_leases_everyone(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.zadd(keys.dirty, {f"u{k}": float(k) for k in range(2500)})
    claims = WorkQueue(rclient, keys, lease_ms=1000).claim(2500, now_ms=0)
    assert len(claims) == 2500 and rclient.zcard(keys.dirty_inflight) == 2500
    assert rclient.zrange(keys.dirty_inflight, 0, -1, withscores=True)[-1][1] == 1000.0


def test_a_user_another_worker_holds_stays_queued_until_that_worker_acks(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    first, second = WorkQueue(rclient, keys, lease_ms=1000), WorkQueue(rclient, keys, lease_ms=1000)
    rclient.zadd(keys.dirty, {"busy": 10.0, "idle": 20.0})
    assert [c.user_id for c in first.claim(1, now_ms=100)] == ["busy"]
    rclient.zadd(keys.dirty, {"busy": 30.0})  # a change while the first worker serves the older history
    assert [c.user_id for c in second.claim(5, now_ms=200)] == ["idle"]  # busy is skipped, not lost
    assert rclient.zscore(keys.dirty, "busy") == 30.0
    acks = Commands()
    first.ack(acks, ["busy"])
    send(rclient, acks)
    claims = second.claim(5, now_ms=300)
    assert [(c.user_id, c.score) for c in claims] == [("busy", 30.0)]


def test_a_claim_fills_up_past_held_users(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    queue = WorkQueue(rclient, keys, lease_ms=1000)
    rclient.zadd(keys.dirty, {f"u{i:04d}": float(i) for i in range(2500)})
    held = [c.user_id for c in queue.claim(1500, now_ms=0)]
    rclient.zadd(keys.dirty, dict.fromkeys(held, 0.0))  # every held user changed again, ahead in the queue
    rclient.zadd(keys.swap_queue, {held[0]: -1.0, "refresh": -2.0})
    claims = queue.claim(1200, now_ms=10)
    assert [c.user_id for c in claims] == [f"u{i:04d}" for i in range(1500, 2500)] + ["refresh"]
    assert rclient.zcard(keys.dirty) == 1500 and rclient.zrange(keys.swap_queue, 0, -1) == [held[0].encode()]


def test_a_user_in_both_queues_is_claimed_once(rclient: redis.Redis, prefix: str) -> None:
    """A fresh change and a swap refresh for one user: one claim (the fresh one); the refresh is dropped,
    since that claim serves the user with the model the worker now holds."""
    keys = Keys(prefix)
    rclient.zadd(keys.dirty, {"both": 10.0, "fresh": 20.0})
    rclient.zadd(keys.swap_queue, {"both": -900.0, "idle": -800.0})
    claims = WorkQueue(rclient, keys).claim(10, now_ms=100)
    assert [(c.user_id, c.swap) for c in claims] == [("both", False), ("fresh", False), ("idle", True)]
    assert rclient.zcard(keys.swap_queue) == 0 and rclient.zcard(keys.dirty_inflight) == 3


def test_a_model_versions_refresh_is_queued_once_across_replicas(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.zadd(keys.active, {"recent": 9000.0, "older": 8000.0, "dormant": 1000.0})
    first, restarted = WorkQueue(rclient, keys), WorkQueue(rclient, keys)
    assert first.enqueue_refresh("v1", since_ms=5000) == 2  # served since 5000 (wall ms)
    assert rclient.zrange(keys.swap_queue, 0, -1, withscores=True) == [(b"recent", -9000.0), (b"older", -8000.0)]
    rclient.delete(keys.swap_queue)
    assert restarted.enqueue_refresh("v1", since_ms=5000) == 0  # a replica (re)starting on v1: already queued
    assert rclient.zcard(keys.swap_queue) == 0
    assert restarted.enqueue_refresh("v2", since_ms=0) == 3
