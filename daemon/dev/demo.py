"""``recd demo``: the whole system on one machine, with no configuration.

Starts the embedded Kafka-protocol broker (and a local redis-server when none
answers at RECD_REDIS_URL), publishes synthetic profiles, item catalogue and
events (or replays a dataset, with its catalogue where it has item metadata),
runs ingest, training and serving in this process, prints a few users' lists,
a cold-start list and similar items; then sends a catalogue record for an item
nobody has seen yet, with the attributes of the most popular item, and prints
its similar items (placed by its attributes, no retraining), then shuts
everything down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from daemon.dev.embedded import EmbeddedError, LocalProcess, redis_answers, start_broker, start_redis
from daemon.dev.publish import make_producer, publish, publish_catalogue, publish_dataset, publish_synthetic
from daemon.dev.report import Shown
from daemon.dev.synthetic import SyntheticSpec
from daemon.runtime.app import App, create_topics
from daemon.runtime.catalogue import records_of
from daemon.runtime.keys import glob_escape
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.redisconn import redis_client
from daemon.runtime.roles import add_roles
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from schemas.catalogue import CatalogueEvent

COLD_USER = "demo-cold-user"
NEW_ITEM = "demo-new-item"


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during the demo: everything it started is stopped and its keys removed."""


class Stop:
    """The demo's stop flag, set by SIGINT or SIGTERM (the handlers only set it); ``check()`` raises once set."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda _signum, _frame: self.event.set())

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted


class Bar:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, max(1, total), 0
        self._drawn: int | None = None

    def update(self, done: int) -> None:
        done = min(done, self.total)
        if done == self._drawn:
            return  # nothing moved: do not redraw (keeps logs of non-terminal runs short)
        self.done = self._drawn = done
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"\r  {self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] {self.done:>8}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        self.update(self.total)
        sys.stderr.write("\n")


def wait_for(label: str, total: int, progress: Callable[[], int], stop: Stop, timeout_s: float = 600) -> None:
    bar, deadline = Bar(label, total), time.monotonic() + timeout_s
    while (done := progress()) < total:
        stop.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: {done}/{total} after {timeout_s:.0f}s")
        bar.update(done)
        stop.event.wait(0.1)
    bar.close()


def start_services(settings: Settings, out: Path) -> tuple[Settings, list[LocalProcess]]:
    """Embedded broker unless RECD_KAFKA_BOOTSTRAP is set; local redis-server unless one answers."""
    started: list[LocalProcess] = []
    tag = uuid.uuid4().hex[:6]
    changes: dict[str, Any] = {"redis_prefix": f"recd-demo-{tag}:", "consumer_group": f"recd-demo-{tag}"}
    if "RECD_KAFKA_BOOTSTRAP" not in os.environ:
        started.append(start_broker(out))
        changes["kafka_bootstrap"] = started[-1].address
    else:
        changes.update(
            events_topic=f"recd-demo-{tag}.events",
            profiles_topic=f"recd-demo-{tag}.profiles",
            items_topic=f"recd-demo-{tag}.items",
        )
    if not redis_answers(settings.redis_url):
        started.append(start_redis(out))
        changes["redis_url"] = started[-1].address
    return settings.replace(**changes), started


def produce(settings: Settings, args: argparse.Namespace, stop: Stop) -> tuple[int, dict[str, str]]:
    """Publish the demo's events; returns (events published, item titles)."""
    create_topics(settings)
    if args.dataset is not None:
        from trainer.datasets import load_dataset

        titles = load_dataset(args.dataset).item_titles
        sent = publish_dataset(settings, args.dataset, limit=args.events, progress=lambda _n: stop.check())
        return sent.events, titles
    spec = SyntheticSpec(
        users=args.users,
        items=args.items,
        seed=0,
        start_ms=int(time.time() * 1000) - 3_600_000,
        step_ms=max(1, 3_500_000 // max(1, args.events)),
    )
    bar = Bar("publishing events", args.events)

    def progress(n: int) -> None:
        stop.check()
        bar.update(bar.done + n)

    sent = publish_synthetic(settings, spec, args.events, progress=progress)
    bar.close()
    return sent.events, {}


def add_cold_user(settings: Settings) -> None:
    producer = make_producer(settings)
    profile = {
        "user_id": COLD_USER,
        "attributes": {"country": "DE", "age_band": "25-34", "gender": "F"},
        "ts": int(time.time() * 1000),
    }
    publish(producer, settings.profiles_topic, [profile])
    producer.close()


def add_new_item(settings: Settings, reader: StateReader) -> CatalogueEvent | None:
    """A catalogue record for ``NEW_ITEM``, with the attributes of the most popular item that has any (None
    where no popular item has a catalogue record: a dataset without item metadata)."""
    popular = [item for item, _ in reader.popularity(20)]
    known = records_of(topology_of(settings), reader.keys, popular)
    for item in popular:
        if item in known and known[item].attributes:
            record = CatalogueEvent(NEW_ITEM, known[item].attributes, True, int(time.time() * 1000))
            producer = make_producer(settings)
            publish_catalogue(producer, settings.items_topic, [record])
            producer.close()
            return record
    return None


def handled(reader: StateReader) -> int:
    """Events ingest has handled (applied, duplicates, stale), over every shard."""
    totals = reader.totals()
    return totals["applied"] + totals["duplicates"] + totals["stale"]


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    if "RECD_LOG_LEVEL" not in os.environ:  # the demo talks through its progress bars and report
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("daemon").setLevel(logging.WARNING)
    out: Path = args.out
    shutil.rmtree(out / "models", ignore_errors=True)  # the demo's own: a model of another run must not gate this one
    out.mkdir(parents=True, exist_ok=True)
    stop = Stop()
    stop.install()
    try:
        settings, started = start_services(settings, out)
    except EmbeddedError as exc:
        print(f"recd demo: {exc}", file=sys.stderr)
        return 2
    try:
        return _demo(settings, args, out, stop)
    except Interrupted:
        sys.stderr.write("\nrecd demo: interrupted; stopping what it started and removing its keys\n")
        return 130
    finally:
        _cleanup(settings)
        for proc in started:
            proc.stop()


def _demo(settings: Settings, args: argparse.Namespace, out: Path, stop: Stop) -> int:
    from daemon.dev.report import print_report

    print(f"recd demo: broker {settings.kafka_bootstrap}, redis {settings.redis_url} (prefix {settings.redis_prefix})")
    sent, titles = produce(settings, args, stop)
    settings = settings.replace(
        model_dir=str(out / "models"),
        train_min_events=max(1, int(sent * 0.9)),
        train_interval_s=3600,
        metrics_port=0,
        roles=("ingest", "serve", "train"),
    )
    app = App.create(settings)
    add_roles(app)
    http = app.start_http()
    reader = StateReader(topology_of(settings), keys_of(settings), settings.segment_keys)
    try:
        app.service.stop.clear()
        runner = _start(app)
        wait_for("ingesting", sent, lambda: handled(reader), stop)
        add_cold_user(settings)
        wait_for("training the first model", 100, lambda: _training(app, reader), stop)
        wait_for("serving fresh lists", 1, lambda: int(_settled(reader, app)), stop)
        new_item = add_new_item(settings, reader)
        if new_item is not None:
            wait_for("placing a new item", 1, lambda: int(reader.client.exists(reader.keys.sim(NEW_ITEM))), stop, 60)
        url = f"http://127.0.0.1:{http.port}"
        shown = Shown(titles, COLD_USER, new_item)
        print_report(settings, app, reader, shown, out, url, live=args.keep_serving)
        if args.keep_serving:
            stop.event.wait()
    finally:
        app.service.stop.set()
        runner()
        app.stop_http()
    return 0


def _start(app: App) -> Callable[[], int]:
    """Run the service in a background thread; returns a join function."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(app.service.run()), name="recd-demo-service")
    thread.start()

    def join() -> int:
        thread.join()
        return result[0] if result else 1

    return join


def _training(app: App, reader: StateReader) -> int:
    """Percent of the first training run done: its fit's epochs until a model is published."""
    if reader.client.exists(reader.keys.model_current):
        return 100
    fit = app.metrics.registry.get_sample_value("recd_step_progress_ratio", {"step": "fit"})
    return int(99 * (fit or 0.0))


def _settled(reader: StateReader, app: App) -> bool:
    """A model is served, no user waits, and what the report prints was written by that model."""
    index = app.watcher.current if app.watcher is not None else None
    client, keys = reader.client, reader.keys
    if index is None or reader.queued():
        return False
    users = [*reader.recently_served(3), COLD_USER]  # the report prints the cold user's list too
    lists: Any = [client.get(keys.rec(u)) for u in users]
    versions = {json.loads(raw)["model_version"] for raw in lists if raw}
    top = reader.popularity(1)
    return versions == {index.version} and all(lists) and bool(top and client.exists(keys.sim(top[0][0])))


def _cleanup(settings: Settings) -> None:
    """Remove every key under the demo's own prefix (it is the demo's alone)."""
    try:
        client = redis_client(settings)
        for key in client.scan_iter(match=glob_escape(settings.redis_prefix) + "*", count=1000):
            client.delete(key)
    except redis.RedisError as exc:
        print(f"recd demo: could not remove the keys under {settings.redis_prefix}: {exc}", file=sys.stderr)
