"""``recd run``: build the selected roles and run them until a signal arrives."""

from __future__ import annotations

import logging

import redis

from daemon.app import App, build_ingest, build_lookup, build_server, build_watcher, redis_client
from daemon.config import ConfigError, Settings
from daemon.publish import ensure_topics

log = logging.getLogger(__name__)

KNOWN_ROLES = ("ingest", "serve", "train")
# Redis being away (down, restarting, loading its data, timing out): the serve and train roles retry their step
# with backoff instead of stopping the service (ingest retries its own writes, see daemon/ingest.py). A serve
# step cut short leaves its users leased; the leases expire and they are served again.
REDIS_OUTAGE = (redis.ConnectionError, redis.TimeoutError)


def add_roles(app: App) -> None:
    """Attach each selected role to the app's service."""
    settings = app.settings
    unknown = set(settings.roles) - set(KNOWN_ROLES)
    if unknown or not settings.roles:
        raise ConfigError(f"RECD_ROLES: unknown roles {sorted(unknown)}; choose from {', '.join(KNOWN_ROLES)}")
    if "ingest" in settings.roles:
        ensure_topics(settings)
        app.service.add("ingest", build_ingest(settings, app.metrics))
    if "serve" in settings.roles:
        watcher = app.watcher = build_watcher(settings, redis_client(settings), app.metrics)
        app.service.add("serve", build_server(settings, app.metrics, watcher), idle_wait_s=0.02,
                        transient=REDIS_OUTAGE, on_retry=lambda _: app.metrics.errors.labels("serve").inc())
        build_lookup(settings, lambda: watcher.current).add_routes(app.routes)
    if "train" in settings.roles:
        from daemon.retrain import TrainRole

        app.service.add("train", TrainRole(settings, redis_client(settings), app.metrics), idle_wait_s=1.0,
                        transient=REDIS_OUTAGE, on_retry=lambda _: app.metrics.errors.labels("train").inc())


def run_daemon(settings: Settings) -> int:
    app = App.create(settings)
    add_roles(app)
    app.service.install_signals()
    app.start_http()
    try:
        return app.service.run()
    finally:
        app.stop_http()
