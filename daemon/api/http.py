"""The daemon's HTTP face: /metrics, /healthz, /readyz, /openapi.json and the lookup routes.

A Starlette application (``build_app``) served by uvicorn in a background thread (``start_http`` returns a
handle whose ``stop()`` shuts it down). Lookup routes are ``Endpoint``s: an async handler taking the request,
its OpenAPI operation, and whether it needs the bearer token. Every lookup is counted and timed by endpoint
and status; Redis being away answers 503 with the reason, any other failure a logged 500. /metrics is
prometheus-client's ASGI app, after the sampled gauges are refreshed; /openapi.json is generated from the
application's route table (``daemon.api.openapi``).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from daemon.api import openapi
from daemon.runtime.metrics import Metrics
from daemon.runtime.redisconn import REDIS_OUTAGE

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
Handler = Callable[[Request], Awaitable[Response]]
BACKLOG = 1024  # a burst of clients connecting at once must not overflow the accept queue (1 s SYN retransmits)


class BadRequest(ValueError):
    """Input a lookup refuses: a 400 with this message."""


@dataclass(frozen=True)
class Endpoint:
    """One lookup route: ``name`` labels its metrics; ``{param}`` in ``path`` captures one segment."""

    name: str
    path: str
    handler: Handler
    operation: dict[str, Any]  # its OpenAPI operation object
    protected: bool = True  # needs the bearer token when one is configured


@dataclass
class Routes:
    """The lookup endpoints plus health checks and the hooks run before a scrape."""

    metrics: Metrics
    live: list[tuple[str, Check]] = field(default_factory=list)
    ready: list[tuple[str, Check]] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    on_scrape: list[Callable[[], None]] = field(default_factory=list)  # refresh sampled gauges
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run as the server stops

    def add(self, endpoint: Endpoint) -> None:
        self.endpoints.append(endpoint)

    def health(self, checks: list[tuple[str, Check]]) -> tuple[int, dict[str, Any]]:
        results = {}
        for name, check in checks:
            ok, detail = check()
            results[name] = {"ok": ok, "detail": detail}
        status = 200 if all(r["ok"] for r in results.values()) else 503
        return status, {"status": "ok" if status == 200 else "unavailable", "checks": results}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers)


def tokens_of(setting: str) -> tuple[bytes, ...]:
    """The accepted bearer tokens: ``RECD_HTTP_TOKEN`` is one, or several comma-separated while rotating."""
    return tuple(token.strip().encode() for token in setting.split(",") if token.strip())


def _authorized(request: Request, tokens: tuple[bytes, ...]) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    offered = given.strip().encode()
    matches = [hmac.compare_digest(offered, token) for token in tokens]  # each compared, in constant time
    return scheme.lower() == "bearer" and any(matches)


def _measured(endpoint: Endpoint, metrics: Metrics, tokens: tuple[bytes, ...]) -> Handler:
    """The endpoint's handler behind the token check, with its outcome counted and timed."""

    async def route(request: Request) -> Response:
        started = time.perf_counter()
        reply = await _answer(endpoint, request, tokens)
        metrics.lookups.labels(endpoint.name, str(reply.status_code)).inc()
        metrics.lookup_seconds.labels(endpoint.name).observe(time.perf_counter() - started)
        return reply

    return route


async def _answer(endpoint: Endpoint, request: Request, tokens: tuple[bytes, ...]) -> Response:
    if tokens and endpoint.protected and not _authorized(request, tokens):
        return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
    try:
        return await endpoint.handler(request)
    except BadRequest as exc:
        return error(400, str(exc))
    except REDIS_OUTAGE as exc:
        log.warning("lookup answered 503: redis unavailable (%s)", exc)
        return error(503, f"redis unavailable: {exc}")
    except Exception:
        log.exception("lookup failed: %s", request.url.path)
        return error(500, "internal error")


class _Scrape:
    """prometheus-client's ASGI app, after the sampled gauges are refreshed (off the event loop: they ask Redis)."""

    def __init__(self, routes: Routes) -> None:
        self.hooks = routes.on_scrape
        self.inner = make_asgi_app(routes.metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for refresh in self.hooks:
            await run_in_threadpool(refresh)
        await self.inner(scope, receive, send)


def _health(routes: Routes, checks: list[tuple[str, Check]]) -> Handler:
    async def route(_request: Request) -> Response:
        status, body = await run_in_threadpool(routes.health, checks)
        return JSONResponse(body, status)

    return route


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def build_app(routes: Routes, token: str = "") -> Starlette:
    """The application: health, metrics, the lookups (behind ``token`` when set: one, or several
    comma-separated) and their OpenAPI document."""
    tokens = tokens_of(token)
    table: list[BaseRoute] = [
        Route("/healthz", _health(routes, routes.live), name="healthz"),
        Route("/readyz", _health(routes, routes.ready), name="readyz"),
        Route("/metrics", _Scrape(routes), name="metrics", methods=["GET"]),
    ]
    table += [Route(e.path, _measured(e, routes.metrics, tokens), name=e.name) for e in routes.endpoints]
    operations = {e.name: e.operation for e in routes.endpoints}
    document = openapi.document(table, operations, secured=bool(tokens))

    async def spec(_request: Request) -> Response:
        return JSONResponse(document)

    table.append(Route("/openapi.json", spec, name="openapi"))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        for close in routes.on_close:
            await close()

    return Starlette(routes=table, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)


@dataclass
class HttpHandle:
    server: uvicorn.Server
    thread: threading.Thread
    host: str  # the address it listens on
    port: int

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use fails the start with its reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def start_http(routes: Routes, host: str, port: int, token: str = "", start_s: float = 10.0) -> HttpHandle:
    """Serve ``build_app(routes, token)`` on ``host:port`` (0 = any free port) until ``stop()``."""
    sock = _listen(host, port)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up lines would repeat ours
    config = uvicorn.Config(build_app(routes, token), log_config=None, access_log=False, lifespan="on", backlog=BACKLOG)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="recd-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        sock.close()
        raise RuntimeError(f"the HTTP server on {host}:{port} did not start within {start_s:g}s")
    address, bound = sock.getsockname()[:2]
    log.info("http on %s:%d (/metrics /healthz /readyz /openapi.json and the lookups)", address, bound)
    return HttpHandle(server, thread, str(address), int(bound))
