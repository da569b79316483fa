"""``recd run``: build the selected roles and run them until a signal arrives."""

from __future__ import annotations

import logging

from daemon.app import App, build_ingest
from daemon.config import ConfigError, Settings
from daemon.publish import ensure_topics

log = logging.getLogger(__name__)

KNOWN_ROLES = ("ingest", "serve", "train")


def add_roles(app: App) -> None:
    """Attach each selected role to the app's service."""
    settings = app.settings
    unknown = set(settings.roles) - set(KNOWN_ROLES)
    if unknown or not settings.roles:
        raise ConfigError(f"RECD_ROLES: unknown roles {sorted(unknown)}; choose from {', '.join(KNOWN_ROLES)}")
    if "ingest" in settings.roles:
        ensure_topics(settings)
        app.service.add("ingest", build_ingest(settings, app.metrics))


def run_daemon(settings: Settings) -> int:
    app = App.create(settings)
    add_roles(app)
    app.service.install_signals()
    app.start_http()
    try:
        return app.service.run()
    finally:
        app.stop_http()
