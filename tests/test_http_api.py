"""The HTTP server as an application sees it: the bearer token on the lookups, bounded inputs, JSON errors,
the OpenAPI document generated from the route table, loopback by default - and schemathesis, run from that
document against the live server, finding no 5xx and nothing that breaks the document's promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.api.http import Endpoint, HttpHandle, Routes, build_app, start_http
from daemon.api.lookup import MAX_ID_LEN
from daemon.runtime.app import App, build_lookup
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import Settings, load_settings
from schemas.records import RecommendationList, SimilarList

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
ROTATING = f"next-token, {TOKEN}"  # RECD_HTTP_TOKEN while a new token rolls out
USERS = [f"u{n}" for n in range(20)]
ITEMS = [f"i{n}" for n in range(30)]


def _fill(client: RedisClient, keys: Keys) -> None:
    now = int(time.time() * 1000)
    for n, user in enumerate(USERS):
        items = [ITEMS[(n + j) % len(ITEMS)] for j in range(10)]
        client.set(
            keys.rec(user), RecommendationList(user, items, [1 - j / 10 for j in range(10)], "ann", "v1", now).to_json()
        )
    for n, item in enumerate(ITEMS):
        items = [ITEMS[(n + j + 1) % len(ITEMS)] for j in range(10)]
        client.set(keys.sim(item), SimilarList(item, items, [0.5] * 10, "v1", now).to_json())


@pytest.fixture
def served(settings: Settings, rclient: RedisClient, keys: Keys) -> Iterator[tuple[HttpHandle, Metrics]]:
    _fill(rclient, keys)
    metrics = Metrics(CollectorRegistry())
    routes = Routes(metrics)
    build_lookup(settings, lambda: None).add_routes(routes)
    http = start_http(routes, "127.0.0.1", 0, token=ROTATING)
    try:
        yield http, metrics
    finally:
        http.stop()


def _get(url: str, token: str | None = TOKEN, method: str = "GET") -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
            kind = reply.headers.get("content-type", "")
            return reply.status, json.loads(body) if "json" in kind else body.decode(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_lookups_need_the_token_while_health_metrics_and_the_document_stay_open(
    served: tuple[HttpHandle, Metrics],
) -> None:
    http, metrics = served
    base = f"http://127.0.0.1:{http.port}"
    for token in (None, "wrong", TOKEN + "x"):
        status, body, headers = _get(f"{base}/recommendations/u1", token)
        assert status == 401 and "bearer token" in body["error"] and headers["www-authenticate"] == "Bearer"
    status, body, _ = _get(f"{base}/recommendations/u1")
    assert status == 200 and body["user_id"] == "u1" and body["items"][:2] == ["i1", "i2"]
    assert _get(f"{base}/recommendations/u1", "next-token")[0] == 200  # the second of a rotation's two
    status, body, _ = _get(f"{base}/similar/i3?k=4")
    assert status == 200 and body["items"] == ["i4", "i5", "i6", "i7"]
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert _get(base + path, None)[0] == 200, path
    status, text, _ = _get(f"{base}/metrics", None)
    assert status == 200 and 'recd_lookups_total{endpoint="recommendations",status="401"} 3.0' in text
    assert metrics.registry.get_sample_value("recd_lookups_total", {"endpoint": "similar", "status": "200"}) == 1


def test_inputs_are_bounded_and_errors_are_json(served: tuple[HttpHandle, Metrics]) -> None:
    base = f"http://127.0.0.1:{served[0].port}"
    for query in ("k=0", "k=11", "k=abc", "k=-1", "k=%C2%B2", "k=99999999999999999999"):
        status, body, _ = _get(f"{base}/recommendations/u1?{query}")
        assert status == 400 and body["error"].startswith("k must be an integer between 1 and 10"), query
    status, body, _ = _get(f"{base}/similar/{'x' * (MAX_ID_LEN + 1)}")
    assert status == 400 and f"longer than {MAX_ID_LEN}" in body["error"]
    status, body, _ = _get(f"{base}/recommendations/{'x' * MAX_ID_LEN}")
    assert status == 200 and body["source"] == "popular" and body["model_version"] == "none"
    status, body, _ = _get(f"{base}/recommendations/%20%20")
    assert status == 400 and body["error"] == "user_id is empty"
    status, body, _ = _get(f"{base}/similar/no-such-item")
    assert status == 404 and "not known" in body["error"]
    status, body, _ = _get(f"{base}/nowhere")
    assert status == 404 and body["error"] == "Not Found"
    status, body, headers = _get(f"{base}/recommendations/u1", method="POST")
    assert (
        status == 405 and body["error"] == "Method Not Allowed" and set(headers["allow"].split(", ")) == {"GET", "HEAD"}
    )


def test_the_document_is_generated_from_the_route_table(settings: Settings) -> None:
    routes = Routes(Metrics(CollectorRegistry()))
    build_lookup(settings, lambda: None).add_routes(routes)
    app = build_app(routes, token=TOKEN)  # the application start_http serves
    served = {route.path for route in app.routes if getattr(route, "name", "") != "openapi"}  # type: ignore[attr-defined]
    doc = _document(routes, TOKEN)
    assert (
        set(doc["paths"])
        == served
        == {"/healthz", "/readyz", "/metrics", "/recommendations/{user_id}", "/similar/{item_id}"}
    )
    rec = doc["paths"]["/recommendations/{user_id}"]["get"]
    assert rec["security"] == [{"bearer": []}] and "401" in rec["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    k = next(p for p in rec["parameters"] if p["name"] == "k")
    assert k["schema"]["maximum"] == settings.top_k
    assert "security" not in _document(routes)["paths"]["/similar/{item_id}"]["get"]
    wrong = Endpoint("odd", "/odd/{a}/{b}", routes.endpoints[0].handler, routes.endpoints[0].operation)
    routes.add(wrong)
    with pytest.raises(ValueError, match=r"/odd/\{a\}/\{b\} captures \['a', 'b'\]"):
        build_app(routes)


def _document(routes: Routes, token: str = "") -> dict[str, Any]:
    http = start_http(routes, "127.0.0.1", 0, token=token)
    try:
        status, document, _ = _get(f"http://127.0.0.1:{http.port}/openapi.json", None)
    finally:
        http.stop()
    assert status == 200
    return dict(document)


@pytest.mark.single_redis
def test_the_server_binds_loopback_unless_configured(settings: Settings) -> None:
    assert load_settings(environ={}).http_host == "127.0.0.1"
    app = App.create(settings)
    http = app.start_http()
    try:
        assert http.host == "127.0.0.1"
        assert _get(f"http://127.0.0.1:{http.port}/healthz", None)[0] == 200
        with pytest.raises(OSError):
            start_http(app.routes, "127.0.0.1", http.port)  # a port in use fails the start, with its reason
    finally:
        app.stop_http()


@pytest.mark.slow
def test_schemathesis_from_the_generated_document_finds_nothing(
    served: tuple[HttpHandle, Metrics], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{served[0].port}/openapi.json"
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", url, "--checks", "all", "--seed", "7"]
    command += ["--max-examples", "150", "-H", f"Authorization: Bearer {TOKEN}", "--no-color"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts is not None, done.stdout[-2000:]
    assert int(counts[1]) >= 300 and counts[1] == counts[2], counts[0]
    lookups = served[1].registry.get_sample_value
    assert (lookups("recd_lookups_total", {"endpoint": "recommendations", "status": "200"}) or 0) > 50
    assert not lookups("recd_lookups_total", {"endpoint": "recommendations", "status": "500"})
