"""recd's one frozen settings object.

Built once at start from defaults, then an optional TOML file (``--config``),
then ``RECD_*`` environment variables (the environment wins), and passed down
explicitly. ``describe()`` renders every setting for ``recd --help``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

log = logging.getLogger(__name__)

ENV_PREFIX = "RECD_"
# RECD_* variables that are not settings: the settings file, and the test suite's servers.
OTHER_VARIABLES = ("RECD_CONFIG", "RECD_TEST_REDIS_URL", "RECD_TEST_KAFKA_BOOTSTRAP")

# A dead letter is one Kafka record: keep it well under the 100 MiB a broker accepts in one request.
MAX_DLQ_PAYLOAD_BYTES = 64 * 1024 * 1024

DEFAULT_WEIGHTS = "view=1,click=2,add_to_cart=3,purchase=5,like=4,rating=4,dislike=-4,skip=-1"


def _s(default: Any, doc: str) -> Any:
    """A setting with its default and a one-line description for --help."""
    if isinstance(default, tuple | dict):
        return field(default_factory=lambda: default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


class ConfigError(ValueError):
    """A setting that cannot be used, with the variable or key that holds it."""


@dataclass(frozen=True)
class Settings:
    # --- Kafka
    kafka_bootstrap: str = _s("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port")
    events_topic: str = _s("recd.events", "topic of interaction events (key = user_id)")
    profiles_topic: str = _s("recd.profiles", "topic of user profile events (key = user_id)")
    items_topic: str = _s("recd.items", "topic of item catalogue events (key = item_id)")
    dlq_suffix: str = _s(".dlq", "dead-letter topic = source topic + this suffix")
    dlq_max_payload_bytes: int = _s(
        900_000,
        "dead letters carry at most this many payload bytes; longer payloads are cut (recd.truncated)"
        " to fit a topic's default 1 MB max.message.bytes; 0 = headers only",
    )
    consumer_group: str = _s("recd", "consumer group shared by all recd replicas")
    client_id: str = _s("recd", "Kafka client id prefix")
    kafka_security_protocol: str = _s("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = _s("", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
    kafka_sasl_username: str = _s("", "SASL user name")
    kafka_sasl_password: str = _s("", "SASL password (prefer the environment to the TOML file)")
    kafka_ssl_cafile: str = _s("", "CA bundle to verify the brokers")
    kafka_ssl_certfile: str = _s("", "client certificate (mutual TLS)")
    kafka_ssl_keyfile: str = _s("", "client key (mutual TLS)")
    poll_max_records: int = _s(20000, "most records in one poll, one Redis batch (larger: fewer scripts per event)")
    poll_timeout_ms: int = _s(200, "poll timeout; the loop never blocks longer on the broker")
    session_timeout_ms: int = _s(10000, "consumer session timeout (>= 6000 for Apache Kafka)")
    # --- Redis
    redis_url: str = _s("redis://127.0.0.1:6379/0", "Redis URL; rediss:// for TLS, user:password@ for ACL")
    redis_prefix: str = _s("recd:", "prefix of every Redis key recd writes (no braces: they make hash tags)")
    redis_ca_file: str = _s("", "CA bundle that verifies a rediss:// server (default: the system's)")
    redis_cert_file: str = _s("", "client certificate for mutual TLS with Redis")
    redis_key_file: str = _s("", "client key for mutual TLS with Redis")
    redis_cluster: bool = _s(False, "RECD_REDIS_URL names a seed node of a Redis Cluster (redis-py's cluster client)")
    redis_shards: int = _s(
        256, "virtual shards users are spread over (a shard is one slot); fixed for a prefix once data is written"
    )
    redis_wait_replicas: int = _s(
        -1, "replica acks each write waits for before offsets are committed (-1: 1 where a primary has a replica)"
    )
    # --- Events
    event_weights: dict[str, float] = _s(
        {k: float(v) for k, v in (p.split("=") for p in DEFAULT_WEIGHTS.split(","))},
        "implicit weight per event type, e.g. 'view=1,click=2,purchase=5'; <= 0 is not a positive",
    )
    rating_threshold: float = _s(4.0, "a rating counts as positive when value >= this (seed 000 keeps >= 4)")
    max_event_bytes: int = _s(16384, "larger messages go to the dead-letter topic as oversized")
    max_future_skew_s: int = _s(86400, "event times further than this in the future are refused")
    history_len: int = _s(100, "events kept per user history (newest by event time)")
    history_ttl_s: int = _s(90 * 86400, "a user's state expires this long after their last event (0 = never)")
    trending_half_life_s: int = _s(86400, "half-life of the time-decayed trending score")
    segment_keys: tuple[str, ...] = _s(
        ("country", "age_band", "gender"), "profile attributes forming cold-start segments, coarsest first"
    )
    # --- HTTP and metrics
    http_host: str = _s("127.0.0.1", "address of the /metrics, /healthz, /readyz and lookup HTTP server")
    metrics_port: int = _s(9108, "port of that server (0 = any free port)")
    http_token: str = _s(
        "",
        "bearer token the lookup routes require (Authorization: Bearer ...); several comma-separated while"
        " rotating; empty = open. /metrics, /healthz, /readyz and /openapi.json stay open",
    )
    # --- Training
    model_dir: str = _s("var/models", "folder of versioned model snapshots")
    model_kind: str = _s("ials", "model preset trained by the scheduler (see `recd model presets`)")
    model_params: dict[str, float] = _s(
        {}, "numeric overrides of the preset's settings, e.g. 'dim=128,unobserved=0.004' (pick with bench/tune.py)"
    )
    device: str = _s("auto", "training device: auto (CUDA when present), cpu, cuda")
    train_threads: int = _s(2, "CPU threads for training")
    train_interval_s: int = _s(600, "fine-tune at least this often when new events arrived")
    train_min_events: int = _s(1000, "...or as soon as this many new events arrived")
    search_interval_s: int = _s(
        86400,
        "search presets and settings on held-out latest events at most this often (first after the first model);"
        " 0 = never: train RECD_MODEL_KIND with RECD_MODEL_PARAMS",
    )
    search_budget_s: int = _s(600, "wall-clock seconds one model search may spend fitting candidates")
    search_presets: tuple[str, ...] = _s((), "presets searched besides RECD_MODEL_KIND, e.g. 'ials_tail,gfcf'")
    search_min_users: int = _s(200, "users with two or more positive events needed before a model search")
    quality_tolerance: float = _s(0.05, "publish only if held-out recall@20 >= current * (1 - this)")
    keep_versions: int = _s(5, "model versions kept for rollback")
    # --- Serving
    top_k: int = _s(10, "items per recommendation list")
    serve_batch: int = _s(1024, "most changed users served per step (a deep queue fills it)")
    index_kind: str = _s("auto", "faiss index: auto (flat up to 50,000 items, else hnsw), flat, hnsw, ivf")
    # HNSW M 24, efConstruction 100 reaches recall@10 0.968 / 0.973 / 0.977 / 0.982 at efSearch 64 / 80 / 96 / 128
    # on 1M clustered items x 64 dims (bench/ann.py); on trained iALS vectors of 271k items (bench/scale.py) it
    # reaches 0.946 / 0.950 / 0.955 / 0.958 at efSearch 64 / 80 / 96 / 128: 128 keeps a margin over 0.95.
    index_hnsw_m: int = _s(24, "HNSW graph degree (memory: ~2 x M x 4 bytes per item beyond the vectors)")
    index_ef_search: int = _s(128, "HNSW search breadth: higher = better recall, fewer queries per second")
    index_ef_construction: int = _s(100, "HNSW build breadth: higher = better graph, slower build")
    index_ivf_nprobe: int = _s(32, "IVF lists searched per query")
    index_threads: int = _s(1, "faiss threads building an index in a serving process")
    cold_min_history: int = _s(1, "users with fewer positive history items get cold-start lists")
    new_item_slots: int = _s(1, "slots per list given to new items without embeddings")
    new_item_window_s: int = _s(86400, "items first seen this recently count as new")
    catalogue_log_len: int = _s(10_000, "approximate cap of each shard's catalogue change stream (serving follows it)")
    recency_half_life_s: int = _s(
        7 * 86400, "half-life of an event's weight in the user vector (age: how much older than the user's newest)"
    )
    model_poll_s: float = _s(2.0, "how often serving checks for a newly published model")
    refresh_window_s: int = _s(30 * 86400, "after a model swap, refresh users active this recently")
    list_ttl_s: int = _s(90 * 86400, "recommendation lists expire this long after written (0 = never)")
    roles: tuple[str, ...] = _s(("ingest", "serve", "train"), "roles of `recd run`")
    startup_wait_s: int = _s(60, "how long `recd run` waits at start for Redis and (ingest) the broker")
    log_level: str = _s("INFO", "logging level")

    def __post_init__(self) -> None:
        if self.history_len < 1 or self.history_len > 10_000:
            raise ConfigError("RECD_HISTORY_LEN must be within 1..10000")
        if self.poll_max_records < 1 or self.poll_timeout_ms < 1:
            raise ConfigError("RECD_POLL_MAX_RECORDS and RECD_POLL_TIMEOUT_MS must be positive")
        if not 0 <= self.dlq_max_payload_bytes <= MAX_DLQ_PAYLOAD_BYTES:
            raise ConfigError(f"RECD_DLQ_MAX_PAYLOAD_BYTES must be within 0..{MAX_DLQ_PAYLOAD_BYTES}")
        if self.search_budget_s < 1 or self.search_min_users < 1:
            raise ConfigError("RECD_SEARCH_BUDGET_S and RECD_SEARCH_MIN_USERS must be positive")
        if self.top_k < 1:
            raise ConfigError("RECD_TOP_K must be positive")
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise ConfigError("RECD_REDIS_PREFIX must not contain '{' or '}' (they would make a hash tag)")
        if not 1 <= self.redis_shards <= 16384:
            raise ConfigError("RECD_REDIS_SHARDS must be within 1..16384 (a shard is one cluster slot)")
        if self.redis_wait_replicas < -1:
            raise ConfigError("RECD_REDIS_WAIT_REPLICAS must be -1 (auto), 0 or a number of replicas")
        for name, weight in self.event_weights.items():
            if not isinstance(weight, float):
                raise ConfigError(f"RECD_EVENT_WEIGHTS: weight of {name!r} is not a number")
        object.__setattr__(self, "event_weights", MappingProxyType(dict(self.event_weights)))
        object.__setattr__(self, "model_params", MappingProxyType(dict(self.model_params)))

    @property
    def dlq_topic(self) -> str:
        return self.events_topic + self.dlq_suffix

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _convert(name: str, kind: Any, raw: Any) -> Any:
    """One raw value (env string or TOML value) -> the field's type."""
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        if kind is int or kind is float:
            if isinstance(raw, bool):
                raise ValueError("a boolean is not a number")
            return kind(raw)
        if kind == tuple[str, ...]:
            items = raw if isinstance(raw, list) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind == dict[str, float]:
            pairs = raw.items() if isinstance(raw, dict) else (p.split("=", 1) for p in str(raw).split(",") if p)
            return {str(k).strip(): float(v) for k, v in pairs}
        return str(raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{env_name(name)} / {name}: cannot read {raw!r}: {exc}") from None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each RECD_* variable that names no setting, with the closest setting's variable."""
    known = [env_name(f.name) for f in dataclasses.fields(Settings)]
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; `recd --help` lists every setting"
        out.append(f"{name} is not a recd setting and is ignored{hint}")
    return out


def load_settings(
    toml_path: str | Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Defaults <- TOML file <- RECD_* environment <- explicit overrides. Unknown RECD_* variables are
    logged as warnings (unknown TOML keys are refused: a file is checked as a whole)."""
    env = os.environ if environ is None else environ
    for warning in unknown_variables(env):
        log.warning("%s", warning)
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    if toml_path is None and env.get(ENV_PREFIX + "CONFIG"):
        toml_path = env[ENV_PREFIX + "CONFIG"]
    if toml_path is not None:
        try:
            doc = tomllib.loads(Path(toml_path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {toml_path}: {exc}") from None
        doc = doc.get("recd", doc)
        unknown = sorted(set(doc) - names)
        if unknown:
            raise ConfigError(f"config file {toml_path}: unknown settings {', '.join(unknown)}")
        values.update({k: _convert(k, hints[k], v) for k, v in doc.items()})
    for name in names:
        if env_name(name) in env:
            values[name] = _convert(name, hints[name], env[env_name(name)])
    values.update(overrides)
    return Settings(**values)


def describe() -> str:
    """Every setting as 'RECD_NAME (default): description', for --help."""
    lines = []
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, dict):
            default = ",".join(f"{k}={v:g}" for k, v in default.items())
        lines.append(f"  {env_name(f.name):<30} {f.metadata['doc']} [default: {default}]")
    return "\n".join(lines)
