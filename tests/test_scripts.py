"""Scripts run on the nodes that own their keys, every node's pipeline at once (single Redis and cluster)."""

from __future__ import annotations

import threading
import time

import pytest

from daemon.runtime.redisconn import FatalRedisError, RedisClient, Topology
from daemon.runtime.scripts import Call, Script, run

pytestmark = pytest.mark.integration

INCR = Script("incr.lua", "return redis.call('INCR', KEYS[1])")


def spread_keys(prefix: str, n: int = 64) -> list[str]:
    """Keys in n slots (on every primary of a cluster)."""
    return [f"{prefix}{{t{k}}}:n" for k in range(n)]


def test_every_call_runs_once_and_replies_in_order(rclient: RedisClient, topology: Topology, prefix: str) -> None:
    keys = spread_keys(prefix)
    rclient.set(keys[5], 41)
    replies = run(topology, [Call(INCR, [key], []) for key in keys])
    assert [int(r) for r in replies] == [42 if k == 5 else 1 for k in range(len(keys))]
    assert [int(rclient.get(key) or 0) for key in keys] == replies


def test_an_error_that_cannot_heal_is_raised_after_every_node_ran(
    rclient: RedisClient, topology: Topology, prefix: str
) -> None:
    keys = spread_keys(prefix)
    rclient.rpush(keys[0], "not a counter")  # INCR there: WRONGTYPE
    with pytest.raises(FatalRedisError, match="WRONGTYPE"):
        run(topology, [Call(INCR, [key], []) for key in keys])
    assert all(rclient.get(key) == b"1" for key in keys[1:])  # the other calls ran, on every node


def test_tasks_for_several_nodes_run_at_once_and_each_outcome_comes_back(topology: Topology) -> None:
    threads: set[int] = set()

    def task(k: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.3)
        if k == 2:
            raise ValueError("task 2 failed")
        return k

    started = time.perf_counter()
    outcomes = topology.on_each([lambda k=k: task(k) for k in range(4)])  # type: ignore[misc]
    assert time.perf_counter() - started < 0.9  # one after another: 1.2 s
    assert outcomes[:2] == [0, 1] and outcomes[3] == 3 and isinstance(outcomes[2], ValueError)
    assert len(threads) == 4
