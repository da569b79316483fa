"""The one place Settings become the narrow options each component takes.

Components never read Settings and their option classes have no defaults: every default lives in Settings
(``recd --help`` lists them), and a test or benchmark that wants other values builds Settings with them
(``load_settings(environ={}, top_k=5)``) and asks here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.ingest.deadletters import DeadLetterOptions
from daemon.ingest.source import KafkaOptions, SourceOptions
from daemon.ingest.store import StoreOptions
from daemon.ingest.worker import IngestOptions
from daemon.runtime.keys import Keys
from daemon.runtime.redisconn import Topology, redis_client
from daemon.runtime.settings import Settings
from daemon.serve.index import IndexSpec
from daemon.serve.lists import ServeOptions
from daemon.train.scheduler import TrainOptions
from daemon.train.search import SearchOptions
from schemas.events import Limits


def keys_of(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix, settings.redis_shards)


def topology_of(settings: Settings) -> Topology:
    """The Redis topology (one Redis or a cluster) with its own client."""
    return Topology(redis_client(settings), settings.redis_wait_replicas)


def kafka_security(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments for SASL/SSL (empty settings left out)."""
    opts: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    pairs = {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
        "ssl_cafile": settings.kafka_ssl_cafile,
        "ssl_certfile": settings.kafka_ssl_certfile,
        "ssl_keyfile": settings.kafka_ssl_keyfile,
    }
    opts.update({k: v for k, v in pairs.items() if v})
    return opts


def kafka_options(settings: Settings) -> KafkaOptions:
    servers = tuple(s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip())
    return KafkaOptions(servers, kafka_security(settings), settings.client_id)


def topic_names(settings: Settings) -> list[str]:
    """The topics recd reads and writes: events, profiles, the catalogue and their dead-letter topics."""
    sources = [settings.events_topic, settings.profiles_topic, settings.items_topic]
    return sources + [topic + settings.dlq_suffix for topic in sources]


def source_options(settings: Settings) -> SourceOptions:
    return SourceOptions(
        kafka_options(settings),
        (settings.events_topic, settings.profiles_topic, settings.items_topic),
        settings.consumer_group,
        settings.poll_max_records,
        settings.session_timeout_ms,
        None,
    )


def dead_letter_options(settings: Settings) -> DeadLetterOptions:
    return DeadLetterOptions(kafka_options(settings), settings.dlq_suffix, settings.dlq_max_payload_bytes)


def limits(settings: Settings) -> Limits:
    return Limits(max_bytes=settings.max_event_bytes, max_future_ms=settings.max_future_skew_s * 1000)


def ingest_options(settings: Settings) -> IngestOptions:
    return IngestOptions(settings.poll_timeout_ms, settings.profiles_topic, settings.items_topic, limits(settings))


def store_options(settings: Settings) -> StoreOptions:
    return StoreOptions(
        history_len=settings.history_len,
        history_ttl_s=settings.history_ttl_s,
        trending_half_life_s=settings.trending_half_life_s,
        rating_threshold=settings.rating_threshold,
        weights=settings.event_weights,
        segment_keys=settings.segment_keys,
        catalogue_log_len=settings.catalogue_log_len,
    )


def serve_options(settings: Settings) -> ServeOptions:
    return ServeOptions(
        top_k=settings.top_k,
        batch=settings.serve_batch,
        cold_min_history=settings.cold_min_history,
        new_item_slots=settings.new_item_slots,
        new_item_window_ms=settings.new_item_window_s * 1000,
        recency_half_life_s=float(settings.recency_half_life_s),
        list_ttl_s=settings.list_ttl_s,
        refresh_window_ms=settings.refresh_window_s * 1000,
        weights=settings.event_weights,
        rating_threshold=settings.rating_threshold,
        segment_keys=settings.segment_keys,
        trending_half_life_s=float(settings.trending_half_life_s),
    )


def index_spec(settings: Settings) -> IndexSpec:
    return IndexSpec(
        kind=settings.index_kind,
        hnsw_m=settings.index_hnsw_m,
        ef_search=settings.index_ef_search,
        ivf_nprobe=settings.index_ivf_nprobe,
        threads=settings.index_threads,
        ef_construction=settings.index_ef_construction,
    )


def train_options(settings: Settings) -> TrainOptions:
    return TrainOptions(
        model_dir=Path(settings.model_dir),
        model_kind=settings.model_kind,
        model_params=settings.model_params,
        device=settings.device,
        threads=settings.train_threads,
        interval_s=settings.train_interval_s,
        min_events=settings.train_min_events,
        tolerance=settings.quality_tolerance,
        keep_versions=settings.keep_versions,
        weights=settings.event_weights,
        rating_threshold=settings.rating_threshold,
        search=SearchOptions(
            settings.search_interval_s, settings.search_budget_s, settings.search_presets, settings.search_min_users
        ),
    )
