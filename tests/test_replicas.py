"""Two `recd run --roles ingest,serve` replicas in one consumer group split the partitions."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.dev.embedded import daemon_env
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events
from daemon.runtime.app import create_topics
from daemon.runtime.options import keys_of
from daemon.runtime.redisconn import RedisClient, Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from tests.kafkatools import produce_raw

pytestmark = pytest.mark.integration


def spawn(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = daemon_env(settings, RECD_METRICS_PORT="0", RECD_POLL_MAX_RECORDS="200")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--roles", "ingest,serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def assignments(log: Path, topic: str) -> set[int]:
    """Partitions of ``topic`` the replica holds after its latest assignment."""
    found = re.findall(r"assigned (\[.*\])", log.read_text())
    return {p for t, p in ast.literal_eval(found[-1]) if t == topic} if found else set()


def test_replicas_split_partitions_and_apply_each_event_once(
    settings: Settings, rclient: RedisClient, tmp_path: Path
) -> None:
    create_topics(settings, partitions=4)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [spawn(settings, logs[0])]
    time.sleep(2)
    procs.append(spawn(settings, logs[1]))
    reader, topic = StateReader(Topology(rclient, -1), keys_of(settings)), settings.events_topic
    now = int(time.time() * 1000)
    events = list(synthetic_events(SyntheticSpec(users=200, items=100, seed=9, start_ms=now - 600_000), 4000))
    try:
        deadline = time.monotonic() + 60
        while not (
            all(assignments(log, topic) for log in logs)
            and len(assignments(logs[0], topic) | assignments(logs[1], topic)) == 4
        ):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.5)
        produce_raw(settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in events])
        deadline = time.monotonic() + 60
        while reader.totals()["applied"] < len(events):  # summed over every shard
            assert time.monotonic() < deadline, reader.totals()
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    a, b = assignments(logs[0], topic), assignments(logs[1], topic)
    assert a and b and not a & b, (a, b)
    totals = reader.totals()
    assert totals["duplicates"] == 0
    assert totals["applied"] == len(events)
    assert all(proc.returncode == 0 for proc in procs), [log.read_text()[-2000:] for log in logs]
