"""The daemon's HTTP face: /metrics, /healthz, /readyz and the lookup routes.

A ``ThreadingHTTPServer`` in a background thread; ``start_http`` returns a
handle whose ``stop()`` shuts it down. Routes are plain functions
``(path_params, query) -> (status, body)`` so they are testable without HTTP; a body is a
JSON-able object, or bytes already encoded as JSON (a list goes out as its to_json() encodes it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.runtime.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, str], dict[str, list[str]]], tuple[int, Any]]
Check = Callable[[], tuple[bool, str]]


@dataclass
class Routes:
    """Path patterns (``{name}`` captures one segment) -> handlers, plus health checks."""

    metrics: Metrics
    live: list[tuple[str, Check]] = field(default_factory=list)
    ready: list[tuple[str, Check]] = field(default_factory=list)
    table: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    on_scrape: list[Callable[[], None]] = field(default_factory=list)  # refresh sampled gauges

    def add(self, name: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.table.append((name, regex, handler))

    def health(self, checks: list[tuple[str, Check]]) -> tuple[int, Any]:
        results = {}
        for name, check in checks:
            ok, detail = check()
            results[name] = {"ok": ok, "detail": detail}
        status = 200 if all(r["ok"] for r in results.values()) else 503
        return status, {"status": "ok" if status == 200 else "unavailable", "checks": results}

    def dispatch(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        """(status, body, endpoint label or None when no lookup route matched)."""
        if path == "/healthz":
            return (*self.health(self.live), None)
        if path == "/readyz":
            return (*self.health(self.ready), None)
        for name, regex, handler in self.table:
            match = regex.match(path)
            if match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                status, body = handler(params, query)
                return status, body, name
        return 404, {"error": f"no route {path}"}, None


class _RequestHandler(BaseHTTPRequestHandler):
    routes: Routes  # set on the subclass made per server
    server_version = "recd"
    protocol_version = "HTTP/1.1"  # keep-alive: every reply carries Content-Length
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/metrics":
            for refresh in self.routes.on_scrape:
                refresh()
            self._send(200, generate_latest(self.routes.metrics.registry), CONTENT_TYPE_LATEST)
            return
        started = time.perf_counter()
        try:
            status, body, endpoint = self.routes.dispatch(parts.path, parse_qs(parts.query))
        except Exception:
            log.exception("lookup failed: %s", self.path)
            status, body, endpoint = 500, {"error": "internal error"}, "error"
        if endpoint is not None:
            self.routes.metrics.lookups.labels(endpoint, str(status)).inc()
            self.routes.metrics.lookup_seconds.labels(endpoint).observe(time.perf_counter() - started)
        self._send(status, body if isinstance(body, bytes) else json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


@dataclass
class HttpHandle:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default 5 drops SYNs under a burst of clients: 1 s retransmit stalls


def start_http(routes: Routes, host: str, port: int) -> HttpHandle:
    handler = type("RecdHandler", (_RequestHandler,), {"routes": routes})
    server = _Server((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="recd-http", daemon=True)
    thread.start()
    log.info("http on %s:%d (/metrics /healthz /readyz)", host, server.server_address[1])
    return HttpHandle(server, thread)
