"""The catalogue in serving (real broker, real Redis single and cluster): a new item with attributes is
placed by the served model at once - similar-items list, its neighbours' lists, users' new-item slots - and
an item made unavailable leaves every list."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from daemon.dev.synthetic import SyntheticSpec, SyntheticWorld, synthetic_catalogue
from daemon.ingest.catalogue import CatalogueStore
from daemon.runtime.options import topology_of
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import Settings
from schemas.catalogue import CatalogueEvent
from schemas.records import SimilarList
from tests.kafkatools import produce_raw
from tests.test_serving import World, _get_each, _lists, _served, _train, serving_world

pytestmark = pytest.mark.integration

SPEC = SyntheticSpec(users=80, items=120, clusters=4, seed=5)  # the items of serving_world's stream


def send(w: World, records: list[CatalogueEvent]) -> None:
    produce_raw(w.settings, w.settings.items_topic, [(r.item_id.encode(), r.to_json()) for r in records])


def similar(w: World, client: RedisClient, item: str) -> SimilarList | None:
    raw = client.get(w.keys.sim(item))
    return SimilarList.from_json(raw) if raw else None


def test_new_and_unavailable_items(settings: Settings, rclient: RedisClient) -> None:
    with serving_world(settings, rclient, new_item_slots=1) as w:
        now = int(time.time() * 1000)
        send(w, list(synthetic_catalogue(SPEC, now - 60_000)))
        _train(w)
        w.pump(
            lambda: _served(w) and w.server.watcher.current is not None and w.server.watcher.current.cold is not None
        )
        assert w.server.catalogue.placed_in_build  # the attribute map was fitted beside the index
        world, cluster = SyntheticWorld(SPEC), 2
        new = CatalogueEvent("brand-new", {"genre": (f"g{cluster}",)}, True, now)
        send(w, [new])
        took = w.pump(lambda: similar(w, rclient, "brand-new") is not None, timeout_s=30)
        assert took <= 5.0
        found = similar(w, rclient, "brand-new")
        assert found is not None and len(found.items) == w.settings.top_k
        home = sum(int(world.item_cluster[int(i[1:])]) == cluster for i in found.items if i[1:].isdigit())
        assert home >= 0.7 * len(found.items), found.items  # placed among its genre's items
        neighbours = [similar(w, rclient, i) for i in found.items[:3]]
        assert any(n is not None and "brand-new" in n.items for n in neighbours)
        assert_new_item_slot(w, rclient)
        assert_unavailable_leaves_lists(w, rclient, now)


def assert_new_item_slot(w: World, rclient: RedisClient) -> None:
    """Users who change now get the cold item in their new-item slot (their vectors rank the few cold items)."""
    users = sorted({e["user_id"] for e in w.events})
    w.server.queue.mark(users, int(time.time() * 1000))
    w.pump(lambda: w.reader.queued() == 0)
    lists = _lists(rclient, w.keys, users)
    assert sum("brand-new" in rec.items for rec in lists.values()) > 0


def assert_unavailable_leaves_lists(w: World, rclient: RedisClient, now: int) -> None:
    users = sorted({e["user_id"] for e in w.events})
    counts = Counter(i for rec in _lists(rclient, w.keys, users).values() for i in rec.items)
    gone = counts.most_common(1)[0][0]
    attributes = {"genre": ("g0",)}
    send(w, [CatalogueEvent(gone, attributes, False, now + 1)])

    def removed() -> bool:
        lists = _lists(rclient, w.keys, users)
        sims = [r for r in _get_each(rclient, [w.keys.sim(i) for i in counts]) if r]
        return all(gone not in rec.items for rec in lists.values()) and all(
            gone not in SimilarList.from_json(r).items for r in sims
        )

    took = w.pump(removed, timeout_s=30)
    assert took <= 10.0, took
    assert gone in w.server.catalogue.unavailable


def test_catalogue_items_without_events_get_similar_lists_from_each_model(
    settings: Settings, rclient: RedisClient
) -> None:
    """An item in the catalogue before the model (never had by anyone) and one that arrives while the model's
    index builds are both placed at the swap and get similar-items lists of that model."""
    with serving_world(settings, rclient) as w:
        now = int(time.time() * 1000)
        send(w, [*synthetic_catalogue(SPEC, now - 60_000), CatalogueEvent("never-sold", {"genre": ("g1",)}, True, now)])
        shard = w.keys.catalogue(w.keys.shard_of("never-sold"))
        w.pump(lambda: bool(rclient.hexists(shard, "never-sold")))
        store = CatalogueStore(topology_of(w.settings), w.keys, 10_000)
        mid_build = CatalogueEvent("mid-build", {"genre": ("g2",)}, True, now)
        w.server.watcher.on_built.insert(0, lambda _index: store.apply([mid_build]) and None)
        version = _train(w)
        w.pump(lambda: all(similar(w, rclient, i) is not None for i in ("never-sold", "mid-build")), timeout_s=30)
        for item in ("never-sold", "mid-build"):
            found = similar(w, rclient, item)
            assert found is not None and found.model_version == version and len(found.items) == w.settings.top_k
