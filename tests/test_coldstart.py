"""Cold start against a real Redis (single and cluster): segment pools read while a segment was filling up
must not stick; pools and trending are summed over the shards that hold them."""

from __future__ import annotations

from collections.abc import Callable

from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.state import StateReader
from daemon.serve.coldstart import ColdStart

HALF_LIFE_S = 86_400.0


def _fill(client: RedisClient, keys: Keys, segment: str, items: range, name: str = "i") -> None:
    """Counts for ``items`` at a finest segment, each item's in another shard (as if from other users)."""
    for i in items:
        shard = i % keys.shards
        client.sadd(keys.segments(shard), segment)
        client.zadd(keys.segment(shard, segment), {f"{name}{i}": float(100 - i)})


def _trending(client: RedisClient, keys: Keys, n: int) -> None:
    for i in range(n):
        client.zadd(keys.trending(i % keys.shards), {f"t{i}": 1.0})


def _cold(topology: Topology, keys: Keys, clock: Callable[[], float]) -> ColdStart:
    return ColdStart(StateReader(topology, keys), HALF_LIFE_S, refresh_s=300.0, clock=clock)


def test_a_short_cached_pool_is_reread_before_falling_back_to_trending(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    _trending(rclient, keys, 20)
    seg = "country=DE|age_band=25-34"
    _fill(rclient, keys, seg, range(3))
    now = [0.0]
    cold = _cold(topology, keys, lambda: now[0])
    assert cold.for_user([seg], set(), 10)[2] == "popular"  # 3 items < 10: too short, trending instead
    _fill(rclient, keys, seg, range(3, 15))
    now[0] += 0.5  # well inside the 2 s a young pool is otherwise cached for
    items, _, source = cold.for_user(["country=DE", seg], set(), 10)
    assert source == f"coldstart:{seg}" and items == [f"i{i}" for i in range(10)]
    _fill(rclient, keys, "country=DE|age_band=35-44", range(10), name="j")
    seen = {f"i{i}" for i in range(6)}  # leaves 9 in the finest pool: the coarser one answers
    now[0] += 0.5
    assert cold.for_user(["country=DE", seg], seen, 10)[2] == "coldstart:country=DE"


def test_a_short_pool_is_reread_at_most_once_per_interval(rclient: RedisClient, topology: Topology, keys: Keys) -> None:
    _trending(rclient, keys, 20)
    _fill(rclient, keys, "country=FR", range(3))
    now = [0.0]
    cold = _cold(topology, keys, lambda: now[0])
    reads: list[str] = []
    pool = cold._segment_pool
    cold._segment_pool = lambda segment, age: reads.append(segment) or pool(segment, age)  # type: ignore[method-assign]
    for _ in range(50):  # a batch of cold users in a short segment: one read, not one per user
        assert cold.for_user(["country=FR"], set(), 10)[2] == "popular"
    now[0] += 0.5
    cold.for_user(["country=FR"], set(), 10)
    assert reads.count("country=FR") == 2
