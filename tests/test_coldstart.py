"""Cold start against a real Redis: segment pools read while a segment was filling up must not stick."""

from __future__ import annotations

import redis

from daemon.runtime.keys import Keys
from daemon.serve.coldstart import ColdStart


def _fill(client: redis.Redis, keys: Keys, segment: str, items: range) -> None:
    client.sadd(keys.segments, segment)
    client.zadd(keys.segment(segment), {f"i{i}": float(100 - i) for i in items})


def test_a_short_cached_pool_is_reread_before_falling_back_to_trending(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.zadd(keys.trending, {f"t{i}": 1.0 for i in range(20)})
    seg = "country=DE|age_band=25-34"
    _fill(rclient, keys, seg, range(3))
    now = [0.0]
    cold = ColdStart(rclient, keys, refresh_s=300.0, clock=lambda: now[0])
    assert cold.for_user([seg], set(), 10)[2] == "popular"  # 3 items < 10: too short, trending instead
    _fill(rclient, keys, seg, range(3, 15))
    now[0] += 0.5  # well inside the 2 s a young pool is otherwise cached for
    items, _, source = cold.for_user(["country=DE", seg], set(), 10)
    assert source == f"coldstart:{seg}" and items == [f"i{i}" for i in range(10)]
    rclient.sadd(keys.segments, "country=DE|age_band=35-44")
    rclient.zadd(keys.segment("country=DE|age_band=35-44"), {f"j{i}": 1.0 for i in range(10)})
    seen = {f"i{i}" for i in range(6)}  # leaves 9 in the finest pool: the coarser one answers
    now[0] += 0.5
    assert cold.for_user(["country=DE", seg], seen, 10)[2] == "coldstart:country=DE"


def test_a_short_pool_is_reread_at_most_once_per_interval(rclient: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rclient.zadd(keys.trending, {f"t{i}": 1.0 for i in range(20)})
    _fill(rclient, keys, "country=FR", range(3))
    now = [0.0]
    cold = ColdStart(rclient, keys, refresh_s=300.0, clock=lambda: now[0])
    reads = []
    top = cold._top
    cold._top = lambda key: reads.append(key) or top(key)  # type: ignore[method-assign]
    for _ in range(50):  # a batch of cold users in a short segment: one read, not one per user
        assert cold.for_user(["country=FR"], set(), 10)[2] == "popular"
    now[0] += 0.5
    cold.for_user(["country=FR"], set(), 10)
    assert reads.count(keys.segment("country=FR")) == 2
