"""The trainer's snapshot of Redis: every stored history as aligned arrays, weighed by the history rule."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.ingest.store import RedisStore, StoreOptions
from daemon.runtime.history import entries, event_weight, weight_table
from daemon.runtime.keys import Keys, text
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.train.source import read_snapshot
from schemas.events import InteractionEvent

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
WEIGHTS = {"view": 1.0, "click": 2.0, "rating": 4.0, "dislike": -3.0}


OPTIONS = StoreOptions(
    history_len=100, history_ttl_s=0, trending_half_life_s=86400, rating_threshold=4.0, weights=WEIGHTS, segment_keys=()
)


def random_events(rng: np.random.Generator) -> list[tuple[InteractionEvent, int]]:
    """3000 events of 150 users (over every shard) and 90 items."""
    kinds = ["view", "click", "rating", "dislike"]
    events = []
    for k in range(3000):
        kind = kinds[int(rng.integers(0, 4))]
        value = float(rng.integers(1, 11)) / 2 if kind == "rating" else None
        event = InteractionEvent(f"e{k}", f"u{rng.integers(0, 150)}", f"i{rng.integers(0, 90)}", kind, T0 + k, value)
        events.append((event, T0))
    return events


def test_snapshot_holds_every_record_as_the_per_record_decoder_reads_it(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    events = random_events(np.random.default_rng(3))
    RedisStore(topology, keys, OPTIONS).apply_events(events, T0)
    snap = read_snapshot(topology, keys, weight_table(WEIGHTS, 4.0), chunk=37)  # many chunks, a short last one
    data = snap.data
    assert snap.applied_events == 3000 == len(data)  # 100 kept per user: nobody has that many here
    names = {int(n): text(i) for n, i in rclient.hgetall(keys.item_ids).items()}  # type: ignore[union-attr]
    got = sorted(
        (data.user_ids[u], data.item_ids[i], float(w), None if np.isnan(v) else float(v), int(t))
        for u, i, w, v, t in zip(data.users, data.items, data.weights, data.values, data.ts, strict=True)
    )
    want = sorted(
        (
            user,
            names[e.item],
            event_weight(e.type, e.value, WEIGHTS, 4.0),
            e.value if e.type == "rating" else None,
            e.ts * 1000,
        )
        for user in {ev.user_id for ev, _ in events}
        for e in entries(rclient.get(keys.history(user)))  # type: ignore[arg-type]
    )
    assert got == want
    assert data.item_ids == sorted(data.item_ids)


def test_an_empty_store_gives_an_empty_snapshot(topology: Topology, keys: Keys) -> None:
    snap = read_snapshot(topology, keys, weight_table(WEIGHTS, 4.0))
    assert len(snap.data) == 0 and snap.data.user_ids == [] and snap.applied_events == 0


def test_records_of_an_item_the_dictionary_lost_are_left_out(
    rclient: RedisClient, topology: Topology, keys: Keys
) -> None:
    events = random_events(np.random.default_rng(4))
    store = RedisStore(topology, keys, OPTIONS)
    store.apply_events(events, T0)
    rclient.hdel(keys.item_ids, str(store.item_numbers.numbers["i7"]))
    data = read_snapshot(topology, keys, weight_table(WEIGHTS, 4.0)).data
    assert "i7" not in data.item_ids and len(data.item_ids) == 89
    assert len(data) == sum(1 for e, _ in events if e.item_id != "i7")
    kept = sorted((data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items, strict=True))
    assert kept == sorted((e.user_id, e.item_id) for e, _ in events if e.item_id != "i7")
