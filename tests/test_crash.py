"""The ingest process is killed (SIGKILL) again and again during a replay; Redis must
end up equal to the ground truth. A SIGTERM drains, commits and exits cleanly."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.groundtruth import replay
from daemon.dev.embedded import daemon_env, free_port
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.runtime.options import keys_of
from daemon.runtime.profiles import finest_segment
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from tests.kafkatools import committed_total, produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spawn(settings: Settings, log: Path, port: int = 0) -> subprocess.Popen[bytes]:
    env = daemon_env(settings, RECD_METRICS_PORT=str(port), RECD_POLL_MAX_RECORDS="500")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def reader_of(settings: Settings, rclient: RedisClient) -> StateReader:
    return StateReader(Topology(rclient, -1), keys_of(settings), settings.segment_keys)


def handled(reader: StateReader) -> int:
    """Events ingest has answered for, summed over every shard."""
    totals = reader.totals()
    return totals["applied"] + totals["duplicates"] + totals["stale"]


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_during_progress(settings: Settings, reader: StateReader, log: Path, rng: random.Random, times: int) -> int:
    """Start ingest ``times`` times, each SIGKILLed soon after it made progress; returns how many were killed."""
    kills = 0
    for _ in range(times):
        proc = spawn(settings, log)
        before = handled(reader)
        wait_for(lambda: handled(reader) > before or proc.poll() is not None, 60, "progress")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    return kills


def test_sigkill_during_replay_loses_and_doubles_nothing(
    settings: Settings, rclient: RedisClient, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=300, items=200, seed=11, start_ms=now - 3_600_000, step_ms=1)
    events = list(synthetic_events(spec, 40_000))
    profiles = list(synthetic_profiles(spec, now - 7_200_000))
    reader, log, rng = reader_of(settings, rclient), tmp_path / "ingest.log", random.Random(1)
    # Profiles first, and applied, so the ground truth can attribute every event to its
    # segment (across topics Kafka promises no order; a later profile counts later events).
    produce_raw(settings, settings.profiles_topic, [(p["user_id"].encode(), encode(p)) for p in profiles])
    proc = spawn(settings, log)
    wait_for(lambda: reader.totals()["profiles"] == len(profiles), 60, "profiles")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    kills = kill_during_progress(settings, reader, log, rng, times=4)
    proc = spawn(settings, log)
    try:
        wait_for(lambda: committed_total(settings, settings.events_topic) == len(events), 120, "all offsets committed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills >= 3, log.read_text()[-3000:]

    segs = {p["user_id"]: finest_segment(p["attributes"], settings.segment_keys) for p in profiles}
    expected = replay(events, settings.history_len, settings.event_weights, settings.rating_threshold, segs)
    got = reader.histories_by_item_id(sorted(expected.histories))
    assert {u: [(e.ts, e.crc, i) for i, e in h] for u, h in got.items()} == expected.histories
    assert dict(reader.popularity()) == pytest.approx(dict(expected.popularity))  # summed over shards
    for seg, items in expected.segments.items():
        assert reader.segment_scores(seg) == pytest.approx(dict(items))
    totals = reader.totals()
    assert totals["applied"] == expected.applied
    assert totals["duplicates"] + totals["stale"] > expected.duplicates + expected.stale  # replays happened


def test_sigterm_drains_commits_and_serves_health(settings: Settings, rclient: RedisClient, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    events = list(
        synthetic_events(SyntheticSpec(users=100, items=50, seed=2, start_ms=now - 60_000, step_ms=1), 20_000)
    )
    produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
    reader, port, log = reader_of(settings, rclient), free_port(), tmp_path / "ingest.log"
    proc = spawn(settings, log, port)
    wait_for(lambda: handled(reader) > 0, 60, "progress")
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
        assert json.load(resp)["checks"]["redis"]["ok"] is True
    with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
        assert b"recd_events_applied_total" in resp.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]
    done = handled(reader)
    assert committed_total(settings, settings.events_topic) == done  # drained, committed
    proc = spawn(settings, log)  # a clean restart redelivers nothing
    try:
        wait_for(lambda: handled(reader) == len(events), 60, "the rest")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert reader.totals()["duplicates"] == 0
