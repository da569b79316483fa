"""Lists written before the first model are rewritten by it, whatever the events' own times.

Synthetic streams carry 2023 times and dataset replays their own (1998 for
ML-100K); the refresh after a model swap is about when users were served (wall
time), so every user who has a list gets the model's list.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.dev.publish import publish_dataset, publish_synthetic
from daemon.dev.synthetic import SyntheticSpec
from daemon.runtime.app import build_ingest, build_server, build_trainer, build_watcher
from daemon.runtime.keys import Keys, glob_escape, text
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader, each_shard
from schemas.records import RecommendationList

pytestmark = pytest.mark.integration

SECONDS_1998 = 890_000_000  # 1998-03-15, in ML-100K's span


def write_dataset(folder: Path, users: int = 40, items: int = 60) -> Path:
    """A RecBole file with 1998 timestamps: user u rates items of their taste group (u % 3) highly."""
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(users):
        for k in range(12):
            item = (u % 3) * 20 + (u * 7 + k * 3) % 20
            lines.append(f"{u + 1}\t{item + 1}\t{4 + (k % 2)}\t{SECONDS_1998 + 3600 * u + 60 * k}")
    (folder / "old.inter").write_text("\n".join(lines) + "\n")
    return folder


def publish_synthetic_2023(settings: Settings, _tmp: Path) -> int:
    spec = SyntheticSpec(users=60, items=80, clusters=3, seed=3)  # start_ms: November 2023
    return publish_synthetic(settings, spec, 2500, profiles=False)[1]


def publish_dataset_1998(settings: Settings, tmp: Path) -> int:
    return publish_dataset(settings, write_dataset(tmp / "old"))[1]


def _handled(reader: StateReader) -> int:
    """Events ingest has handled (applied, duplicates, stale), summed over the shards."""
    totals = reader.totals()
    return totals["applied"] + totals["duplicates"] + totals["stale"]


def _dirty(reader: StateReader) -> int:
    """Users waiting in the fresh-change queues, summed over the shards."""
    return sum(int(n) for n in each_shard(reader.topology, reader.keys, lambda p, s: p.zcard(reader.keys.dirty(s))))


def _lists(client: RedisClient, keys: Keys) -> dict[str, RecommendationList]:
    """Every user with a list -> that list (SCAN covers every primary of a cluster; one GET per list)."""
    match = glob_escape(keys.rec("")) + "*"
    users = [text(k)[len(keys.rec("")) :] for k in client.scan_iter(match=match, count=1000)]
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.get(keys.rec(user))
    raw: Any = pipe.execute() if users else []
    return {u: RecommendationList.from_json(r) for u, r in zip(users, raw, strict=True) if r}


def _versions(client: RedisClient, keys: Keys) -> dict[str, str]:
    """Every user with a list -> the model version of that list."""
    return {u: rec.model_version for u, rec in _lists(client, keys).items()}


@pytest.mark.parametrize("produce", [publish_synthetic_2023, publish_dataset_1998], ids=["synthetic", "dataset"])
def test_first_model_rewrites_every_list_whatever_the_event_times(
    settings: Settings, rclient: RedisClient, tmp_path: Path, produce: Callable[[Settings, Path], int]
) -> None:
    settings = settings.replace(train_min_events=1, quality_tolerance=0.5, model_poll_s=0.0)
    sent = produce(settings, tmp_path)
    keys, metrics = keys_of(settings), Metrics(CollectorRegistry())
    reader = StateReader(Topology(rclient, -1), keys)
    ingest = build_ingest(settings, metrics)
    server = build_server(settings, metrics, build_watcher(settings, metrics))
    try:
        deadline = time.monotonic() + 60
        while _handled(reader) < sent or _dirty(reader):
            assert time.monotonic() < deadline, "events not ingested and served"
            ingest.step()
            server.step()
        server.flush()
        before = _versions(rclient, keys)
        assert len(before) >= 40 and set(before.values()) == {"none"}
        outcome = build_trainer(settings, metrics).run_once()
        assert outcome.status == "published", outcome
        deadline = time.monotonic() + 30
        while set(_versions(rclient, keys).values()) != {outcome.version}:
            assert time.monotonic() < deadline, f"lists still of models {Counter(_versions(rclient, keys).values())}"
            server.step()
            server.flush()
        after = _lists(rclient, keys)
        assert set(after) == set(before)
        # the model's own lists: old event times weigh as a live stream's would (ages from each user's newest)
        assert Counter(rec.source for rec in after.values()) == {"ann": len(after)}
    finally:
        ingest.shutdown()
        server.shutdown()


def test_a_replica_started_while_a_model_is_published_rewrites_what_it_served_during_its_build(
    settings: Settings, rclient: RedisClient
) -> None:
    """Another replica already swapped to the model and queued its refresh; this one serves changed users with
    no model while its index builds, then must rewrite their lists with the model."""
    settings = settings.replace(train_min_events=1, quality_tolerance=0.5, model_poll_s=0.0)
    spec = SyntheticSpec(users=60, items=80, clusters=3, seed=3)
    sent = publish_synthetic(settings, spec, 2500, profiles=False)[1]
    keys, metrics = keys_of(settings), Metrics(CollectorRegistry())
    reader = StateReader(Topology(rclient, -1), keys)
    ingest = build_ingest(settings, metrics)
    first = build_server(settings, metrics, build_watcher(settings, metrics))
    try:
        _ingest_all(ingest, reader, sent)
        outcome = build_trainer(settings, metrics).run_once()
        assert outcome.status == "published", outcome
        _serve_until(first, lambda: first.watcher.current is not None and not _dirty(reader))  # refresh queued
        more = publish_synthetic(settings, SyntheticSpec(users=60, items=80, clusters=3, seed=4), 600, profiles=False)[
            1
        ]
        _ingest_all(ingest, reader, sent + more)
        watcher = build_watcher(settings, metrics)
        load = watcher.loader
        watcher.loader = lambda path: (time.sleep(1.5), load(path))[1]  # a build that takes a while
        second = build_server(settings, metrics, watcher)
        seen: set[str] = set()  # list versions in Redis after each step of the build
        _serve_until(second, lambda: seen.update(_versions(rclient, keys).values()) or not watcher.building)
        assert "none" in seen  # the changed users were served during the build, without a model
        _serve_until(second, lambda: set(_versions(rclient, keys).values()) == {outcome.version})
        second.shutdown()
    finally:
        ingest.shutdown()
        first.shutdown()


def _ingest_all(ingest: Any, reader: StateReader, total: int) -> None:
    deadline = time.monotonic() + 60
    while _handled(reader) < total:
        assert time.monotonic() < deadline, "events not ingested"
        ingest.step()


def _serve_until(server: Any, done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        server.step()
        server.flush()
        if done():
            return
        assert time.monotonic() < deadline, f"lists of models {Counter(_versions(server.client, server.keys).values())}"
