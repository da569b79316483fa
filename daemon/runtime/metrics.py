"""Every metric recd exports, built on an injected ``CollectorRegistry``.

Names are the contract with deploy/grafana and deploy/prometheus rules; a test
scrapes a running daemon and checks every ``recd_*`` name they use exists here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)
FRESH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
TRAIN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Handles to all metrics; one instance per process, passed to each role."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._ingest(registry)
        self._serving(registry)
        self._training(registry)

    def _ingest(self, r: CollectorRegistry) -> None:
        self.events = Counter("recd_events", "Valid interaction events consumed, by type", ["type"], registry=r)
        self.applied = Counter("recd_events_applied", "Events whose effects Redis now holds", registry=r)
        self.invalid = Counter(
            "recd_events_invalid", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=r
        )
        self.duplicates = Counter("recd_events_duplicate", "Replayed events skipped (already applied)", registry=r)
        self.stale = Counter("recd_events_stale", "Events older than a full history window, skipped", registry=r)
        self.profiles = Counter("recd_profiles_applied", "Profile events applied", registry=r)
        self.catalogue = Counter(
            "recd_catalogue_records",
            "Catalogue records consumed, by outcome (applied, unchanged)",
            ["outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "recd_ingest_batch_size", "Messages per ingest batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "recd_ingest_batch_seconds", "Poll-to-commit time of an ingest batch", buckets=FAST_BUCKETS, registry=r
        )
        self.redis_seconds = Histogram(
            "recd_redis_seconds", "Redis round-trip time, by operation", ["op"], buckets=FAST_BUCKETS, registry=r
        )
        self.lag = Gauge(
            "recd_consumer_lag", "Messages behind the partition's high watermark", ["topic", "partition"], registry=r
        )
        self.last_commit = Gauge(
            "recd_last_commit_timestamp_seconds", "Time of the last successful offset commit", registry=r
        )
        self.errors = Counter(
            "recd_errors", "Errors that were retried (redis, kafka, serve, train)", ["component"], registry=r
        )

    def _serving(self, r: CollectorRegistry) -> None:
        self.lists = Counter("recd_lists_written", "Recommendation lists written, by source", ["source"], registry=r)
        self.serve_seconds = Histogram(
            "recd_serve_batch_seconds", "Time to serve one batch of changed users", buckets=FAST_BUCKETS, registry=r
        )
        self.freshness = Histogram(
            "recd_freshness_seconds", "Event message time to the user's list written", buckets=FRESH_BUCKETS, registry=r
        )
        self.dirty_users = Gauge("recd_dirty_users", "Users waiting for a fresh list", registry=r)
        self.index_items = Gauge("recd_index_items", "Items in the served ANN index", registry=r)
        self.index_build = Gauge("recd_index_build_seconds", "Build time of the served ANN index", registry=r)
        self.model_info = Gauge(
            "recd_model_info", "Served model (value 1), by version and kind", ["version", "kind"], registry=r
        )
        self.model_published = Gauge(
            "recd_model_published_timestamp_seconds", "Publish time of the served model", registry=r
        )
        self.lookups = Counter(
            "recd_lookups", "HTTP lookups, by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.lookup_seconds = Histogram(
            "recd_lookup_seconds", "HTTP lookup latency", ["endpoint"], buckets=FAST_BUCKETS, registry=r
        )

    def _training(self, r: CollectorRegistry) -> None:
        self.train_runs = Counter(
            "recd_train_runs",
            "Training runs, by outcome (published, refused, failed, skipped)",
            ["outcome"],
            registry=r,
        )
        self.train_seconds = Histogram(
            "recd_train_seconds", "Duration of a training run", buckets=TRAIN_BUCKETS, registry=r
        )
        self.train_speed = Gauge("recd_train_samples_per_second", "Training pairs/examples per second", registry=r)
        self.train_loss = Gauge("recd_train_loss", "Final mean loss of the last training run", registry=r)
        self.step_progress = Gauge(
            "recd_step_progress_ratio",
            "Share done of a long step (snapshot, fit, evaluate, index_build): 1 when over",
            ["step"],
            registry=r,
        )
        self.step_eta = Gauge(
            "recd_step_eta_seconds", "Estimated seconds left of a long step (0 when over)", ["step"], registry=r
        )
        self.model_quality = Gauge(
            "recd_model_quality", "Held-out quality of the last trained model, by metric", ["metric"], registry=r
        )
        self.search_runs = Counter(
            "recd_model_search_runs", "Model searches, by outcome (chosen, failed)", ["outcome"], registry=r
        )
        self.search_trials = Gauge("recd_model_search_trials", "Settings fitted by the last model search", registry=r)
        self.search_seconds = Gauge("recd_model_search_seconds", "Duration of the last model search", registry=r)
        self.search_quality = Gauge(
            "recd_model_search_quality",
            "Held-out recall@20 of the last search's winner (setting=chosen) and of the configured setting"
            " (setting=configured)",
            ["setting"],
            registry=r,
        )
        self.redis_memory = Gauge("recd_redis_used_memory_bytes", "Redis used_memory (sampled)", registry=r)
        self.ready = Gauge("recd_ready", "1 when the /readyz checks pass (Redis and broker reachable)", registry=r)
