"""Serving end to end on the real broker and Redis (one node, and a Redis Cluster): events -> ingest -> first
model -> lists.

Every warm user gets ten unseen ANN items with a model version and time; a
profile-only user gets a cold-start list; a new event changes the user's list
within a deadline; a model swap (and a rollback) under concurrent readers
never exposes a partial list or one whose scores belong to another version.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.ingest.worker import IngestWorker
from daemon.runtime.app import build_ingest, build_server, build_trainer, build_watcher
from daemon.runtime.history import Entry
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import RedisClient, Topology, redis_client
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader, each_shard
from daemon.serve.server import Server
from daemon.train.publish import publish
from daemon.train.scheduler import TrainRole
from schemas.records import RecommendationList
from tests.kafkatools import produce_raw
from trainer.models.base import History

pytestmark = pytest.mark.integration

COLD_USER = "cold-profile-only"


@dataclass
class World:
    settings: Settings
    keys: Keys
    reader: StateReader  # merged reads of the per-shard state (stats, queues)
    metrics: Metrics
    ingest: IngestWorker
    trainer: TrainRole
    server: Server
    events: list[dict[str, Any]]

    def pump(self, until: Any, timeout_s: float = 60.0) -> float:
        """Step ingest and serving until ``until()`` holds; returns the seconds it took."""
        started = time.monotonic()
        while not until():
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"condition not met within {timeout_s}s")
            self.ingest.step()
            self.server.step()
        return time.monotonic() - started


def _applied(reader: StateReader) -> int:
    """Events ingest has handled (applied, duplicates, stale), summed over the shards."""
    totals = reader.totals()
    return totals["applied"] + totals["duplicates"] + totals["stale"]


def _inflight(w: World) -> int:
    """Users leased by a claim, summed over the shards."""
    return sum(int(n) for n in each_shard(w.reader.topology, w.keys, lambda p, s: p.zcard(w.keys.dirty_inflight(s))))


def _mark_changed(client: RedisClient, keys: Keys, users: list[str], score: float) -> None:
    """Queue users as ingest does: each in their own shard's changed-user queue."""
    by_shard: dict[int, dict[str, float]] = {}
    for user in users:
        by_shard.setdefault(keys.shard_of(user), {})[user] = score
    for shard, members in by_shard.items():
        client.zadd(keys.dirty(shard), members)


@pytest.fixture
def world(settings: Settings, rclient: RedisClient) -> Iterator[World]:
    with serving_world(settings, rclient) as w:
        yield w


@contextlib.contextmanager
def serving_world(settings: Settings, rclient: RedisClient, **overrides: Any) -> Iterator[World]:
    """Events and profiles ingested and served before any model, a profile-only user among them."""
    defaults = {"train_min_events": 1, "train_threads": 2, "recency_half_life_s": 10 * 86_400, "new_item_slots": 0}
    settings = settings.replace(**{**defaults, "quality_tolerance": 0.5, **overrides})
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=80, items=120, clusters=4, seed=5, start_ms=now - 1_800_000, step_ms=600)
    events = list(synthetic_events(spec, 3000))
    profiles = list(synthetic_profiles(spec, now - 3_600_000))
    cold = {"user_id": COLD_USER, "attributes": {"country": "US", "age_band": "25-34", "gender": "F"}, "ts": now}
    produce_raw(settings, settings.profiles_topic, [(p["user_id"].encode(), encode(p)) for p in profiles])
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    metrics = Metrics(CollectorRegistry())
    keys = keys_of(settings)
    watcher = build_watcher(settings.replace(model_poll_s=0.0), metrics)
    w = World(
        settings,
        keys,
        StateReader(Topology(rclient, -1), keys),
        metrics,
        build_ingest(settings, metrics),
        build_trainer(settings, metrics),
        build_server(settings, metrics, watcher),
        events,
    )
    try:
        w.pump(lambda: _applied(w.reader) >= len(events))
        time.sleep(2.5)  # serving re-reads the list of known segments every 2 s
        # a user known only by a profile, arriving once the segments have data
        produce_raw(settings, settings.profiles_topic, [(COLD_USER.encode(), encode(cold))])
        w.pump(lambda: rclient.exists(keys.rec(COLD_USER)))
        yield w
    finally:
        w.ingest.shutdown()
        w.server.shutdown()


def entry_weight(
    entry: Entry, weights: Mapping[str, float], threshold: float, now_s: float, half_life_s: float
) -> float:
    """The test's oracle, one entry at a time: the type's weight (a rating's only at or above the
    threshold; none when not positive), halved every half-life it is older than ``now_s`` (the user's
    newest event)."""
    base = weights.get(entry.type, 0.0)
    if entry.type == "rating" and entry.value < threshold:
        base = 0.0
    if base <= 0:
        return 0.0
    return float(base * 2.0 ** (-max(0.0, now_s - entry.ts) / half_life_s))


def _train(w: World) -> str:
    outcome = w.trainer.run_once()
    assert outcome.status == "published", outcome
    assert outcome.version is not None
    return outcome.version


def _served(w: World) -> bool:
    """A model is served and no user waits in any queue."""
    return w.server.watcher.current is not None and w.reader.queued() == 0


def _get_each(client: RedisClient, keys: list[str]) -> list[Any]:
    """One GET per key, pipelined (per node on a cluster: lists carry no tag, a multi-key MGET would span slots)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return pipe.execute()


def _lists(client: RedisClient, keys: Keys, users: list[str]) -> dict[str, RecommendationList]:
    raw = _get_each(client, [keys.rec(u) for u in users])
    return {u: RecommendationList.from_json(r) for u, r in zip(users, raw, strict=True) if r}


def _warm_users(w: World) -> dict[str, set[str]]:
    """Users with a positive event (they must be served by ANN), with everything they touched."""
    users = sorted({e["user_id"] for e in w.events})
    out = {}
    for user, entries in w.reader.histories_by_item_id(users).items():
        newest = max((e.ts for _, e in entries), default=0)
        weights = [
            entry_weight(
                e, w.settings.event_weights, w.settings.rating_threshold, newest, w.settings.recency_half_life_s
            )
            for _, e in entries
        ]
        if any(x > 0 for x in weights):
            out[user] = {item for item, _ in entries}
    return out


def test_warm_users_get_unseen_ann_lists_and_cold_user_gets_segment(world: World, rclient: RedisClient) -> None:
    version = _train(world)
    world.pump(lambda: _served(world))
    warm = _warm_users(world)
    assert len(warm) > 40
    lists = _lists(rclient, world.keys, sorted(warm))
    assert set(lists) == set(warm), "every warm user has a list"
    now_ms = time.time() * 1000
    for user, rec in lists.items():
        assert rec.source == "ann", (user, rec.source)
        assert len(rec.items) == 10 and len(set(rec.items)) == 10
        assert not set(rec.items) & warm[user], f"{user} was recommended items they have seen"
        assert rec.model_version == version
        assert now_ms - 120_000 < rec.updated_at <= now_ms + 1000
        assert rec.scores == sorted(rec.scores, reverse=True)
        ttl = int(rclient.ttl(world.keys.rec(user)))  # type: ignore[arg-type]
        assert world.settings.list_ttl_s - 300 < ttl <= world.settings.list_ttl_s, "lists expire as configured"
    cold = RecommendationList.from_json(rclient.get(world.keys.rec(COLD_USER)))  # type: ignore[arg-type]
    assert cold.source.startswith("coldstart:") or cold.source == "popular"
    assert cold.source.startswith("coldstart:"), "synthetic profiles share segments with the cold user"
    assert len(cold.items) == 10
    written = world.metrics.registry.get_sample_value("recd_lists_written_total", {"source": "ann"})
    assert written is not None and written >= len(warm)


def test_new_event_changes_the_list_within_deadline(world: World, rclient: RedisClient) -> None:
    _train(world)
    world.pump(lambda: _served(world))
    user = sorted(_warm_users(world))[0]
    before = _lists(rclient, world.keys, [user])[user]
    bought = before.items[0]
    event = {
        "event_id": "fresh-1",
        "user_id": user,
        "item_id": bought,
        "type": "purchase",
        "ts": int(time.time() * 1000),
    }
    produce_raw(world.settings, world.settings.events_topic, [(user.encode(), encode(event))])

    def changed() -> bool:
        now = _lists(rclient, world.keys, [user]).get(user)
        return now is not None and now.updated_at != before.updated_at

    took = world.pump(changed, timeout_s=10.0)
    after = _lists(rclient, world.keys, [user])[user]
    assert bought not in after.items, "a just-bought item must leave the list"
    assert after.items != before.items
    assert took < 5.0, f"list changed {took:.2f}s after the event was produced"
    fresh = world.metrics.registry.get_sample_value("recd_freshness_seconds_count")
    assert fresh is not None and fresh >= 1


def test_excluded_items_leave_every_list_within_a_second(world: World, rclient: RedisClient) -> None:
    _train(world)
    world.pump(lambda: _served(world))
    users = [*sorted(_warm_users(world)), COLD_USER]
    lists = _lists(rclient, world.keys, users)
    banned = [i for i, _ in Counter(i for rec in lists.values() for i in rec.items).most_common(3)]
    rclient.sadd(world.keys.exclusions, *banned)
    time.sleep(1.1)  # serving re-reads the exclusions every second
    # the operations guide's refresh of every user with a history, shard by shard (both keys in the shard's slot)
    for shard in range(world.keys.shards):
        rclient.zunionstore(world.keys.swap_queue(shard), {world.keys.active(shard): -1})
    _mark_changed(rclient, world.keys, [COLD_USER], time.time() * 1000)  # profile-only: rewritten at its next event
    world.pump(lambda: world.reader.queued() == 0)
    for user, rec in _lists(rclient, world.keys, users).items():
        assert rec.updated_at > lists[user].updated_at, user
        assert len(rec.items) == 10 and not set(rec.items) & set(banned), (user, rec.items)
    assert _lists(rclient, world.keys, [COLD_USER])[COLD_USER].source.startswith("coldstart:")


def _expected_scores(w: World, rec: RecommendationList, index: Any) -> list[float]:
    """Scores the named version gives the listed items for this user's history (as served)."""
    entries = w.reader.histories_by_item_id([rec.user_id])[rec.user_id]
    now_s = max(e.ts for _, e in entries)  # ages count from the user's newest event
    pos, weights = [], []
    for item, entry in entries:
        weight = entry_weight(
            entry, w.settings.event_weights, w.settings.rating_threshold, now_s, w.settings.recency_half_life_s
        )
        if item in index.item_pos and weight > 0:
            pos.append(index.item_pos[item])
            weights.append(weight)
    query = index.model.query_vectors([History(np.asarray(pos, np.int64), np.asarray(weights, np.float32))])[0]
    rows = index.model.index_vectors()[[index.item_pos[i] for i in rec.items]]
    return [float(x) for x in rows @ query]


def _serving(w: World, version: str) -> bool:
    """``version`` is served and no user waits in any queue."""
    current = w.server.watcher.current
    return current is not None and current.version == version and w.reader.queued() == 0


@contextlib.contextmanager
def _readers(w: World, users: list[str], problems: list[str], n: int = 3) -> Iterator[list[tuple[str, str]]]:
    """``n`` threads reading the users' lists over and over while the block runs; yields (user, raw list) read."""
    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def read() -> None:
        client = redis_client(w.settings)  # a cluster client on the cluster
        while not stop.is_set():
            for raw in _get_each(client, [w.keys.rec(u) for u in users]):
                try:
                    rec = RecommendationList.from_json(raw)
                except (ValueError, TypeError, KeyError) as exc:
                    problems.append(f"unreadable list: {exc}")
                    continue
                if len(rec.items) != 10 or len(rec.scores) != 10:
                    problems.append(f"partial list for {rec.user_id}")
                seen.append((rec.user_id, raw.decode() if isinstance(raw, bytes) else str(raw)))
        client.close()

    threads = [threading.Thread(target=read) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield seen
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_model_swap_and_rollback_under_concurrent_reads(world: World, rclient: RedisClient) -> None:
    v1 = _train(world)
    world.pump(lambda: _served(world))
    users = sorted(_warm_users(world))[:30]
    indexes = {v1: world.server.watcher.current}
    problems: list[str] = []
    with _readers(world, users, problems) as seen:
        v2 = _train(world)  # a fine-tune of v1 on the same data: a new version to swap to
        assert v2 != v1
        world.pump(lambda: _serving(world, v2))
        indexes[v2] = world.server.watcher.current
        back = world.trainer.store.rollback()
        assert back == v1
        publish(rclient, world.keys, world.trainer.store, back)
        world.pump(lambda: _serving(world, v1))
    assert not problems, problems[:5]
    versions = {json.loads(raw)["model_version"] for _, raw in seen}
    assert versions <= {v1, v2} and v2 in versions, versions
    final = _lists(rclient, world.keys, users)
    assert {rec.model_version for rec in final.values()} == {v1}, "rollback refreshed every list"
    _check_not_mixed(world, {raw for _, raw in seen}, indexes)


def _check_not_mixed(w: World, raws: set[str], indexes: dict[str, Any]) -> None:
    """Every list read must score exactly as the version it names (no mixing of versions)."""
    checked = 0
    for raw in raws:
        rec = RecommendationList.from_json(raw)
        expected = _expected_scores(w, rec, indexes[rec.model_version])
        np.testing.assert_allclose(
            rec.scores,
            expected,
            rtol=1e-3,
            atol=1e-4,
            err_msg=f"{rec.user_id} list does not match model {rec.model_version}",
        )
        checked += 1
    assert checked >= 30


def _change_and_step(w: World, users: list[str], score: float) -> int:
    """Queue users as changed, then one serve step that asks every shard (none waits out an idle back-off)."""
    _mark_changed(w.reader.client, w.keys, users, score)
    w.server.queue.reset_pacing()
    return w.server.step()


def test_a_steps_write_lands_by_the_next_step_in_order_and_its_failure_surfaces(
    world: World, rclient: RedisClient
) -> None:
    _train(world)
    world.pump(lambda: _served(world))
    users = sorted({e["user_id"] for e in world.events})
    server, before_ms = world.server, int(time.time() * 1000)
    assert _change_and_step(world, users[:40], before_ms) == 40  # computed; its write may still be on the writer
    writes: list[list[str]] = []
    real_write, gate = server._write, threading.Event()

    def gated_write(lists: list[RecommendationList], *rest: Any) -> None:
        gate.wait(30)
        writes.append([rec.user_id for rec in lists])
        real_write(lists, *rest)

    server._write = gated_write  # type: ignore[method-assign]
    served = _change_and_step(world, users[40:], before_ms)  # waits for the first write, hands its own over
    assert served == len(users) - 40 and writes == []
    assert _inflight(world) == served  # still leased while being written
    gate.set()
    server.flush()
    assert [sorted(w) for w in writes] == [users[40:]] and _inflight(world) == 0  # claimed shard by shard
    assert all(rec.updated_at >= before_ms for rec in _lists(rclient, world.keys, users).values())

    def failing_write(*_: Any) -> None:
        raise redis.ConnectionError("Redis went away mid-write")

    server._write = failing_write  # type: ignore[method-assign]
    assert _change_and_step(world, [users[0]], before_ms) == 1
    with pytest.raises(redis.ConnectionError):  # the next step reports it; the user stays leased, not lost
        _change_and_step(world, [users[1]], before_ms)
    assert rclient.zscore(world.keys.dirty_inflight(world.keys.shard_of(users[0])), users[0]) is not None
