"""Wiring: Settings -> clients, roles, HTTP routes. The only place parts meet."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisClusterException

from daemon.api.http import HttpHandle, Routes, start_http
from daemon.api.lookup import Lookup
from daemon.ingest.deadletters import DeadLetters
from daemon.ingest.source import KafkaSource
from daemon.ingest.store import RedisStore
from daemon.ingest.topics import ensure_topics
from daemon.ingest.worker import IngestWorker
from daemon.runtime.errors import StartupError, redact
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import (
    dead_letter_options,
    index_spec,
    ingest_options,
    kafka_options,
    keys_of,
    serve_options,
    source_options,
    store_options,
    topic_names,
    topology_of,
    train_options,
)
from daemon.runtime.redisconn import Topology, async_redis_client, redis_check
from daemon.runtime.service import Service
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader, check_layout
from daemon.serve.coldstart import ColdStart
from daemon.serve.index import ServingIndex
from daemon.serve.server import Server
from daemon.train.modelwatch import ModelWatcher
from daemon.train.scheduler import TrainRole
from trainer.models.base import EmbeddingModel

log = logging.getLogger(__name__)


def build_ingest(settings: Settings, metrics: Metrics) -> IngestWorker:
    topology, keys = topology_of(settings), keys_of(settings)
    check_layout(topology, keys)
    return IngestWorker(
        ingest_options(settings),
        lambda on_revoked: KafkaSource(source_options(settings), on_revoked),
        DeadLetters(dead_letter_options(settings)),
        RedisStore(topology, keys, store_options(settings)),
        metrics,
    )


def load_model(path: str) -> EmbeddingModel:
    from trainer.snapshot import load_snapshot

    model: EmbeddingModel = load_snapshot(Path(path))[0]
    return model


def build_watcher(settings: Settings, metrics: Metrics) -> ModelWatcher:
    client = topology_of(settings).client
    return ModelWatcher(client, keys_of(settings), index_spec(settings), load_model, metrics, settings.model_poll_s)


def build_server(settings: Settings, metrics: Metrics, watcher: ModelWatcher) -> Server:
    topology, keys = topology_of(settings), keys_of(settings)
    check_layout(topology, keys)
    return Server(topology, keys, serve_options(settings), watcher, metrics)


def build_lookup(settings: Settings, current: Callable[[], ServingIndex | None]) -> Lookup:
    reader = StateReader(topology_of(settings), keys_of(settings), settings.segment_keys)
    cold = ColdStart(reader, float(settings.trending_half_life_s))
    return Lookup(reader, cold, settings.top_k, current, lambda: async_redis_client(settings))


def create_topics(settings: Settings, partitions: int = 4) -> dict[str, bool]:
    """Create recd's topics where missing; each name -> whether it was created now."""
    return ensure_topics(kafka_options(settings), topic_names(settings), partitions)


def build_trainer(settings: Settings, metrics: Metrics, terminal: TextIO | None = None) -> TrainRole:
    """The train role; ``terminal`` shows its steps' progress bars."""
    topology, keys = topology_of(settings), keys_of(settings)
    check_layout(topology, keys)
    return TrainRole(train_options(settings), topology, keys, metrics, terminal=terminal)


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


def wait_for_redis(settings: Settings, wait_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once Redis answers (a cluster: once it says ok), saying every few seconds that recd waits;
    StartupError after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        ok, detail = redis_check(settings)
        if ok:
            return
        if time.monotonic() >= deadline:
            raise StartupError(f"Redis did not answer at {redact(settings.redis_url)} within {wait_s:g}s ({detail})")
        log.warning("waiting for Redis at %s (%s)", redact(settings.redis_url), detail)
        sleep(min(5.0, max(0.1, deadline - time.monotonic())))


def wait_for_broker(settings: Settings, wait_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once a broker answers, saying every few seconds that recd waits; StartupError after ``wait_s``
    (at once for 0: a command that needs the broker says so instead of retrying in kafka-python)."""
    deadline = time.monotonic() + wait_s
    while True:
        ok, detail = broker_check(settings)
        if ok:
            return
        if time.monotonic() >= deadline:
            waited = f" within {wait_s:g}s" if wait_s else ""
            raise StartupError(
                f"no Kafka broker answered at {settings.kafka_bootstrap}{waited} ({detail}): "
                "start one, or `recd dev up` for a local one"
            )
        log.warning(
            "waiting for the Kafka broker at %s (%s); start one, or `recd dev up` for a local one",
            settings.kafka_bootstrap,
            detail,
        )
        sleep(min(5.0, max(0.1, deadline - time.monotonic())))


class Sampler:
    """Gauges sampled when /metrics is scraped (at most every ``every_s``): Redis memory, readiness."""

    def __init__(self, settings: Settings, routes: Routes, metrics: Metrics, every_s: float = 5.0) -> None:
        self.settings, self.routes, self.metrics, self.every_s = settings, routes, metrics, every_s
        self._last = -every_s
        self._topology: Topology | None = None  # made at the first scrape: a cluster client connects when made

    def refresh(self) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        status, _ = self.routes.health(self.routes.ready)
        self.metrics.ready.set(1 if status == 200 else 0)
        try:
            self._topology = self._topology or topology_of(self.settings)
            used = [float(node.info("memory")["used_memory"]) for node in self._topology.primaries()]
            self.metrics.redis_memory.set(sum(used))
        except (redis.RedisError, RedisClusterException):
            log.debug("redis memory sample failed")


@dataclass
class App:
    """What a running daemon holds: settings, metrics, service, HTTP."""

    settings: Settings
    metrics: Metrics
    service: Service
    routes: Routes
    http: HttpHandle | None = None
    watcher: ModelWatcher | None = None  # set when the serve role runs

    @classmethod
    def create(cls, settings: Settings, registry: CollectorRegistry | None = None) -> App:
        metrics = Metrics(registry or CollectorRegistry())
        service = Service()
        routes = Routes(metrics)
        routes.live.append(("roles", service.liveness))
        routes.ready.append(("redis", lambda: redis_check(settings)))
        routes.ready.append(("kafka", lambda: broker_check(settings)))
        routes.on_scrape.append(Sampler(settings, routes, metrics).refresh)
        return cls(settings, metrics, service, routes)

    def start_http(self) -> HttpHandle:
        self.http = start_http(
            self.routes, self.settings.http_host, self.settings.metrics_port, self.settings.http_token
        )
        return self.http

    def stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
