"""The README's first command, small: `recd demo` runs to completion and prints what it promises."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from daemon.dev.synthetic import SyntheticSpec, SyntheticWorld
from tests.test_refresh import write_dataset

pytestmark = pytest.mark.integration


def demo(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_new_item_placed(text: str, spec: SyntheticSpec) -> None:
    """The demo's new catalogue item, sent with no events, is listed beside items of the genre it names."""
    found = re.search(r"items like demo-new-item, new in the catalogue with no events \(genre: g(\d+);", text)
    assert found, text
    listed = re.findall(r"^\s+\d+\. i(\d+)\s", text[found.end() :].split("\n\n")[0], flags=re.M)[:10]
    assert len(listed) == 10, text[found.start() :]
    home = sum(int(SyntheticWorld(spec).item_cluster[int(i)]) == int(found.group(1)) for i in listed)
    assert home >= 6, text[found.start() :]  # a random placement lists about 1 in 10 of its genre


def test_demo_runs_to_completion(broker: str, redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "RECD_KAFKA_BOOTSTRAP": broker, "RECD_REDIS_URL": redis_url}
    env.pop("RECD_LOG_LEVEL", None)
    out = tmp_path / "demo"
    proc = demo(out, "--events", "6000", "--users", "300", "--items", "150", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.count("source ann") >= 3, text  # three warm users' lists
    assert "with only a profile - source coldstart:" in text, text
    assert "items like the most popular one" in text, text
    assert "metrics: http://127.0.0.1:" in text
    assert_new_item_placed(text, SyntheticSpec(users=300, items=150, seed=0))
    assert (out / "embedding_map.png").stat().st_size > 10_000
    versions = list((out / "models" / "versions").iterdir())
    assert len(versions) == 1 and (versions[0] / "manifest.json").exists()
    assert "Traceback" not in proc.stderr
    # A dataset replay in the same folder afterwards: the first run's model must not gate (or warm-start) it.
    again = demo(out, "--dataset", str(write_dataset(tmp_path / "replay")), env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("source ann") >= 3, again.stdout
    assert len(list((out / "models" / "versions").iterdir())) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_an_interrupted_demo_stops_its_broker_and_removes_its_keys(redis_url: str, tmp_path: Path, sig: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RECD_KAFKA_BOOTSTRAP"}  # the demo starts its own broker
    env.update(RECD_REDIS_URL=redis_url)
    env.pop("RECD_LOG_LEVEL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "demo", "--events", "200000", "--out", str(tmp_path / "demo")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # recd demo: broker 127.0.0.1:P, redis URL (prefix recd-demo-xxxxxx:)
    match = re.search(r"broker (\S+):(\d+), redis .* \(prefix (\S+)\)", first)
    assert match, first
    host, port, prefix = match.group(1), int(match.group(2)), match.group(3)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 180
    while not any(True for _ in client.scan_iter(match=prefix + "*", count=100)):  # ingest has begun
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert list(client.scan_iter(match=prefix + "*", count=1000)) == []
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()  # the embedded broker is gone
