"""``recd run``: build the selected roles and run them until a signal arrives."""

from __future__ import annotations

import logging

from daemon.runtime.app import (
    App,
    build_ingest,
    build_lookup,
    build_server,
    build_watcher,
    create_topics,
    wait_for_broker,
    wait_for_redis,
)
from daemon.runtime.redisconn import REDIS_OUTAGE
from daemon.runtime.settings import ConfigError, Settings

log = logging.getLogger(__name__)

KNOWN_ROLES = ("ingest", "serve", "train")


def add_roles(app: App) -> None:
    """Attach each selected role to the app's service."""
    settings = app.settings
    unknown = set(settings.roles) - set(KNOWN_ROLES)
    if unknown or not settings.roles:
        raise ConfigError(f"RECD_ROLES: unknown roles {sorted(unknown)}; choose from {', '.join(KNOWN_ROLES)}")
    wait_for_redis(settings, settings.startup_wait_s)  # every role reads Redis's key layout at start
    if "ingest" in settings.roles:
        wait_for_broker(settings, settings.startup_wait_s)
        create_topics(settings)
        app.service.add("ingest", build_ingest(settings, app.metrics))
    # A Redis outage: the serve and train roles retry their step with backoff instead of stopping the service
    # (ingest retries its own writes). A serve step cut short leaves its users leased; the leases expire and
    # they are served again.
    if "serve" in settings.roles:
        watcher = app.watcher = build_watcher(settings, app.metrics)
        app.service.add(
            "serve",
            build_server(settings, app.metrics, watcher),
            idle_wait_s=0.02,
            transient=REDIS_OUTAGE,
            on_retry=lambda _: app.metrics.errors.labels("serve").inc(),
        )
        build_lookup(settings, lambda: watcher.current).add_routes(app.routes)
    if "train" in settings.roles:
        from daemon.runtime.app import build_trainer

        app.service.add(
            "train",
            build_trainer(settings, app.metrics),
            idle_wait_s=1.0,
            transient=REDIS_OUTAGE,
            on_retry=lambda _: app.metrics.errors.labels("train").inc(),
        )


def run_daemon(settings: Settings) -> int:
    app = App.create(settings)
    add_roles(app)
    app.service.install_signals()
    app.start_http()
    try:
        return app.service.run()
    finally:
        app.stop_http()
