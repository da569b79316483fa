"""Wiring: Settings -> clients, roles, HTTP routes. The only place parts meet."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry

from daemon.config import Settings
from daemon.consumer import DeadLetters, KafkaSource
from daemon.http import HttpHandle, Routes, start_http
from daemon.ingest import IngestWorker
from daemon.keys import Keys
from daemon.metrics import Metrics
from daemon.service import Service
from daemon.store import RedisStore, StoreOptions

log = logging.getLogger(__name__)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30,
    )


def store_options(settings: Settings) -> StoreOptions:
    return StoreOptions(
        history_len=settings.history_len,
        history_ttl_s=settings.history_ttl_s,
        trending_half_life_s=settings.trending_half_life_s,
        rating_threshold=settings.rating_threshold,
        weights=settings.event_weights,
        segment_keys=settings.segment_keys,
    )


def build_ingest(settings: Settings, metrics: Metrics) -> IngestWorker:
    store = RedisStore(redis_client(settings), Keys(settings.redis_prefix), store_options(settings))
    return IngestWorker(
        settings,
        lambda on_revoked: KafkaSource(settings, on_revoked),
        DeadLetters(settings),
        store,
        metrics,
    )


def redis_check(settings: Settings) -> tuple[bool, str]:
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        return True, "redis answers"
    except redis.RedisError as exc:
        return False, f"redis: {exc}"


def broker_check(settings: Settings) -> tuple[bool, str]:
    errors = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return True, f"broker {server} reachable"
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    return False, "no broker reachable: " + "; ".join(errors)


@dataclass
class App:
    """What a running daemon holds: settings, metrics, service, HTTP."""

    settings: Settings
    metrics: Metrics
    service: Service
    routes: Routes
    http: HttpHandle | None = None

    @classmethod
    def create(cls, settings: Settings, registry: CollectorRegistry | None = None) -> App:
        metrics = Metrics(registry or CollectorRegistry())
        service = Service()
        routes = Routes(metrics)
        routes.live.append(("roles", service.liveness))
        routes.ready.append(("redis", lambda: redis_check(settings)))
        routes.ready.append(("kafka", lambda: broker_check(settings)))
        return cls(settings, metrics, service, routes)

    def start_http(self) -> HttpHandle:
        self.http = start_http(self.routes, self.settings.http_host, self.settings.metrics_port)
        return self.http

    def stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
