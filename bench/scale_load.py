"""The scale benchmark's data: a synthetic catalogue of positive events, loaded the way production loads it.

Users and items come from ``daemon.dev.synthetic.SyntheticWorld`` (what ``recd produce`` streams): clustered
tastes, Zipf popularity inside each cluster and over the whole catalogue (a long tail), Pareto user activity.
Every event is a positive signal (view, click, add_to_cart, purchase, like in ``recd produce``'s proportions),
so ``--positives`` is the number of positive events sent. They go into Redis through the ingest store
(``RedisStore.apply_events``: the ingest Lua scripts, the item dictionary, bounded histories, popularity,
trending, the changed-user queues), in batches as the ingest role applies them, minus Kafka: the Redis state
is the one the daemon would build, with no bulk loader to keep equivalent. Events are drawn and converted a
batch at a time, so the loader holds no object per event beyond one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from daemon.dev.synthetic import TYPE_MIX, SyntheticSpec, SyntheticWorld, synthetic_profiles
from daemon.ingest.store import BatchResult, RedisStore
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.progress import Progress
from daemon.runtime.settings import Settings
from schemas.events import InteractionEvent, ProfileEvent

log = logging.getLogger(__name__)

BATCH = 2_000  # events per ingest batch (the ingest role's batches are of this order)
DRAW = 100_000  # events drawn from the world at a time
PROFILE_BATCH = 5_000
ITEMS_PER_CLUSTER = 2_000  # taste clusters: one per this many items (10 at least, as `recd produce`)
SPAN_S = 30 * 86_400  # the initial events spread over the 30 days before the run
POSITIVE_TYPES = ("view", "click", "add_to_cart", "purchase", "like")
NEW_SHARE = 0.1  # share of the warm start's new events that go to the new items


@dataclass(frozen=True)
class World:
    """The synthetic population: ``items`` catalogue items, ``new_items`` more that appear for the warm start."""

    users: int
    items: int
    seed: int
    new_items: int = 0

    def spec(self) -> SyntheticSpec:
        clusters = max(10, self.items // ITEMS_PER_CLUSTER)
        return SyntheticSpec(users=self.users, items=self.items, clusters=clusters, seed=self.seed)

    def new_item_ids(self) -> list[str]:
        """The ids of the items new at the warm start (numbered after the catalogue's)."""
        return [f"i{self.items + k}" for k in range(self.new_items)]


@dataclass(frozen=True)
class Draw:
    """A batch of events as arrays: user and item numbers, type index (into POSITIVE_TYPES), epoch ms."""

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    kinds: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    first: int  # sequence number of the first event (event ids are unique per run and phase)


def draws(world: SyntheticWorld, n: int, start_ms: int, end_ms: int, seed: int) -> Iterator[Draw]:
    """``n`` events of ``world``, in time order from ``start_ms`` to ``end_ms``, ``DRAW`` at a time."""
    rng = np.random.default_rng((seed, 7))
    probs = np.array([TYPE_MIX[t] for t in POSITIVE_TYPES])
    step = (end_ms - start_ms) / max(1, n)
    for first in range(0, n, DRAW):
        size = min(DRAW, n - first)
        users, items = world.sample(size, rng)
        kinds = rng.choice(len(POSITIVE_TYPES), size, p=probs / probs.sum())
        ts = start_ms + (step * (first + np.arange(size))).astype(np.int64)
        yield Draw(users, items, kinds, ts, first)


def to_events(draw: Draw, tag: str) -> Iterator[list[tuple[InteractionEvent, int]]]:
    """The draw as ingest batches of (event, message ms); user ``k`` is ``u<k>``, item ``k`` is ``i<k>``."""
    users, items, kinds, ts = draw.users.tolist(), draw.items.tolist(), draw.kinds.tolist(), draw.ts.tolist()
    for lo in range(0, len(users), BATCH):
        yield [
            (
                InteractionEvent(
                    f"{tag}-{draw.first + k}", f"u{users[k]}", f"i{items[k]}", POSITIVE_TYPES[kinds[k]], t
                ),
                t,
            )
            for k, t in enumerate(ts[lo : lo + BATCH], lo)
        ]


def load_profiles(store: RedisStore, spec: SyntheticSpec, ts_ms: int) -> None:
    """Every user's profile through the ingest store (segments for cold start), ``PROFILE_BATCH`` at a time."""
    batch: list[tuple[ProfileEvent, int]] = []
    for doc in synthetic_profiles(spec, ts_ms):
        batch.append((ProfileEvent(doc["user_id"], doc["attributes"], doc["ts"]), ts_ms))
        if len(batch) == PROFILE_BATCH:
            store.apply_profiles(batch)
            batch = []
    if batch:
        store.apply_profiles(batch)


def ingest(settings: Settings, batches: Iterator[list[tuple[InteractionEvent, int]]], total: int, label: str) -> int:
    """Apply ``batches`` through the ingest store as the ingest worker does (each batch prepared on this
    thread while a writer thread applies the previous one); returns the events applied (not duplicates)."""
    store = RedisStore(topology_of(settings), keys_of(settings), store_options(settings))
    progress, sent, applied = Progress(Metrics(CollectorRegistry()), label, total, "events"), 0, 0
    with ThreadPoolExecutor(1, thread_name_prefix="scale-ingest") as writer:
        pending: Future[BatchResult] | None = None
        for events in batches:
            prepared = store.prepare(events, int(time.time() * 1000))
            if pending is not None:
                applied += pending.result().applied
            pending = writer.submit(store.apply_prepared, prepared)
            sent += len(events)
            progress.advance(sent)
        if pending is not None:
            applied += pending.result().applied
    progress.finish()
    return applied


def load_initial(settings: Settings, world: World, positives: int, now_ms: int) -> dict[str, float]:
    """Profiles, then ``positives`` events over the ``SPAN_S`` before ``now_ms``: figures of the load."""
    spec = world.spec()
    started = time.perf_counter()
    synthetic = SyntheticWorld(spec)
    store = RedisStore(topology_of(settings), keys_of(settings), store_options(settings))
    load_profiles(store, spec, now_ms - SPAN_S * 1000)
    stream = draws(synthetic, positives, now_ms - SPAN_S * 1000, now_ms - 120_000, world.seed)
    applied = ingest(settings, (b for d in stream for b in to_events(d, f"s{world.seed}")), positives, "load")
    seconds = time.perf_counter() - started
    return {"load_s": round(seconds, 2), "load_events_per_s": round(positives / seconds), "load_applied": applied}


def with_new_items(draw: Draw, items: int, new_items: int, share: float, rng: np.random.Generator) -> Draw:
    """``draw`` with ``share`` of its events (and at least one per new item, while events last) moved to the
    ``new_items`` items numbered from ``items``: the catalogue's newcomers."""
    moved = np.flatnonzero(rng.random(len(draw.items)) < share)
    chosen = items + rng.integers(0, new_items, len(moved))
    every = min(new_items, len(draw.items))
    out = draw.items.copy()
    out[moved] = chosen
    if draw.first == 0:
        out[:every] = items + np.arange(every)  # every new item has an event
    return Draw(draw.users, out, draw.kinds, draw.ts, draw.first)


def load_growth(settings: Settings, world: World, events: int, now_ms: int) -> dict[str, float]:
    """The warm start's new data: ``events`` more events in the last minute before ``now_ms``, ``NEW_SHARE``
    of them (and one at least each) on ``world.new_items`` new items."""
    synthetic = SyntheticWorld(world.spec())
    rng = np.random.default_rng((world.seed, 11))
    started = time.perf_counter()
    stream = draws(synthetic, events, now_ms - 60_000, now_ms - 1_000, world.seed + 1)
    grown = (with_new_items(d, world.items, world.new_items, NEW_SHARE, rng) for d in stream)
    applied = ingest(settings, (b for d in grown for b in to_events(d, f"g{world.seed}")), events, "growth")
    return {"growth_load_s": round(time.perf_counter() - started, 2), "growth_applied": applied}
