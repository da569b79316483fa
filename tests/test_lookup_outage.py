"""HTTP lookups while Redis is away: 503 with the reason, never a 500."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.api.http import Routes, start_http
from daemon.dev.embedded import free_port
from daemon.runtime.app import build_lookup
from daemon.runtime.metrics import Metrics
from daemon.runtime.settings import load_settings

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_lookups_answer_503_with_the_reason_while_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={}, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    metrics = Metrics(CollectorRegistry())
    routes = Routes(metrics)
    build_lookup(settings, lambda: None).add_routes(routes)
    http = start_http(routes, "127.0.0.1", 0)
    try:
        for path in ("/recommendations/u1", "/similar/i1"):
            status, body = _get(f"http://127.0.0.1:{http.port}{path}")
            assert status == 503, (path, status, body)
            assert body["error"].startswith("redis unavailable:") and "refused" in body["error"].lower()
        assert metrics.registry.get_sample_value("recd_lookups_total", {"endpoint": "similar", "status": "503"}) == 1
    finally:
        http.stop()
    assert not [r for r in caplog.records if r.exc_info], "a dependency outage is not a crash: no traceback"
