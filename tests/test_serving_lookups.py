"""Applications reading the lists serving wrote (tests/test_serving.py), on one Redis and on a Redis Cluster:
the HTTP lookups, and the lookup contract - a user's list is one plain GET of ``<prefix>rec:<user>``, a key
without a hash tag, on a cluster as on one node - which `recd recommend` honours too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.api.http import Routes, start_http
from daemon.runtime.app import build_lookup
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import Settings
from schemas.records import RecommendationList
from tests.test_cli import recd
from tests.test_serving import COLD_USER, World, _lists, _served, _train, _warm_users, serving_world

pytestmark = pytest.mark.integration


@pytest.fixture
def world(settings: Settings, rclient: RedisClient) -> Iterator[World]:
    with serving_world(settings, rclient) as w:
        yield w


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_lookups(world: World, rclient: RedisClient) -> None:
    version = _train(world)
    world.pump(lambda: _served(world))
    routes = Routes(world.metrics)
    build_lookup(world.settings, lambda: world.server.watcher.current).add_routes(routes)
    http = start_http(routes, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{http.port}"
    try:
        user = sorted(_warm_users(world))[0]
        status, body = _get(f"{base}/recommendations/{user}")
        assert status == 200 and body["source"] == "ann" and body["model_version"] == version
        assert body["items"] == _lists(rclient, world.keys, [user])[user].items
        status, body = _get(f"{base}/recommendations/{user}?k=3")
        assert status == 200 and len(body["items"]) == 3
        status, body = _get(f"{base}/recommendations/never-seen-user")
        assert status == 200 and (body["source"] == "popular" or body["source"].startswith("coldstart:"))
        assert len(body["items"]) == 10
        status, body = _get(f"{base}/recommendations/{user}?k=0")
        assert status == 400 and "k must be" in body["error"]
        status, body = _get(f"{base}/recommendations/{'x' * 300}")
        assert status == 400 and "longer than" in body["error"]
        item = world.server.watcher.current.item_ids[0]  # type: ignore[union-attr]
        status, body = _get(f"{base}/similar/{item}")
        assert status == 200 and len(body["items"]) == 10 and item not in body["items"]
        status, body = _get(f"{base}/similar/no-such-item")
        assert status == 404 and "not known" in body["error"]
        status, body = _get(f"{base}/openapi.json")
        assert status == 200 and "/recommendations/{user_id}" in body["paths"]
        ok = world.metrics.registry.get_sample_value(
            "recd_lookups_total", {"endpoint": "recommendations", "status": "200"}
        )
        assert ok is not None and ok >= 3
    finally:
        http.stop()


def _recd_env(settings: Settings) -> dict[str, str]:
    """The variables pointing `recd` at this test's Redis (a cluster's seed node with RECD_REDIS_CLUSTER)."""
    return {
        "RECD_REDIS_URL": settings.redis_url,
        "RECD_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
        "RECD_REDIS_PREFIX": settings.redis_prefix,
        "RECD_REDIS_SHARDS": str(settings.redis_shards),
        "RECD_MODEL_DIR": settings.model_dir,
    }


def test_every_list_is_one_plain_get_of_an_untagged_key_and_recd_recommend_prints_it(
    world: World, rclient: RedisClient
) -> None:
    version = _train(world)
    world.pump(lambda: _served(world))
    stored: dict[str, Any] = {}
    for user in [*sorted({e["user_id"] for e in world.events}), COLD_USER]:
        key = world.keys.rec(user)
        assert key == f"{world.settings.redis_prefix}rec:{user}"
        assert "{" not in key and "}" not in key, f"{key} has a hash tag"  # its slot is the whole key's
        raw: Any = rclient.get(key)  # one single-key GET (the cluster client routes it to the key's node)
        assert raw, f"{user} has no list"
        # the node owning the key's slot answers a plain connection's GET itself: no MOVED, nothing to assemble
        assert world.reader.topology.node_of(key).get(key) == raw
        rec = RecommendationList.from_json(raw)
        assert rec.user_id == user and len(rec.items) == 10 and rec.model_version == version, rec
        stored[user] = json.loads(raw)
    assert len(stored) > 40
    user = sorted(_warm_users(world))[0]
    done = recd("recommend", user, env=_recd_env(world.settings))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == stored[user]
