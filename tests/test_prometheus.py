"""A real Prometheus, loaded with deploy/prometheus's recd job and rules, scrapes a real `recd run --roles ingest`
that starts behind a backlog of events; its HTTP API must show what ops look at: events applied per second,
consumer lag per partition that rises and falls back to 0, and the recording rules evaluated over them."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.dev.embedded import free_port
from daemon.dev.publish import publish_synthetic
from daemon.dev.synthetic import SyntheticSpec
from daemon.runtime.app import create_topics
from daemon.runtime.settings import Settings
from tests.test_deploy import DEPLOY, http_get, load_yaml, running_daemon, stop

# Prometheus scrapes one daemon's metrics: what it sees does not depend on the Redis behind it, so one Redis is enough.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

EVENTS = 60_000
PROMETHEUS_MISSING = "prometheus is not on PATH: install Debian's prometheus package (CI does, in .ci/run)"


def write_config(folder: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml's recd job, pointed at one static target and scraped every second."""
    deployed = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    job = next(j for j in deployed["scrape_configs"] if j["job_name"] == "recd")
    job = {k: v for k, v in job.items() if k != "dns_sd_configs"} | {"static_configs": [{"targets": [target]}]}
    config = {
        "global": {**deployed["global"], "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": deployed["rule_files"],
        "scrape_configs": [job],
    }
    for rules in deployed["rule_files"]:
        shutil.copy(DEPLOY / "prometheus" / rules, folder / rules)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_prometheus(config: Path, folder: Path) -> Iterator[str]:
    """`prometheus` on a free loopback port; yields its base URL once /-/ready answers; SIGTERM and wait on exit."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(PROMETHEUS_MISSING)
    base, log = f"http://127.0.0.1:{free_port()}", folder / "prometheus.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address={base.removeprefix('http://')}",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or http_get(base + "/-/ready")[0] == 200, 20, "prometheus ready")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield base
    finally:
        code = stop(proc, 15)
    assert code == 0, f"prometheus did not exit cleanly on SIGTERM ({code}):\n{log.read_text()[-3000:]}"


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            value = predicate()
            if value:
                return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def query(base: str, promql: str) -> dict[str, float]:
    """An instant query -> {labels as JSON: value}."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success", doc
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in doc["data"]["result"]}


def lag_by_partition(base: str, topic: str) -> dict[str, float]:
    found = query(base, f'max by (partition) (recd_consumer_lag{{topic="{topic}"}})')
    return {json.loads(k)["partition"]: v for k, v in found.items()}


def recorded_lag(base: str) -> dict[str, float]:
    return {json.loads(k)["topic"]: v for k, v in query(base, "recd:consumer_lag:sum").items()}


def publish(settings: Settings) -> None:
    now = int(time.time() * 1000)
    spec = SyntheticSpec(users=500, items=300, seed=7, start_ms=now - 600_000, step_ms=10)
    assert publish_synthetic(settings, spec, EVENTS, profiles=False, catalogue=False) == (0, EVENTS, 0)


def watch_catch_up(base: str, settings: Settings) -> dict[str, float]:
    """Poll Prometheus until every event is consumed and each partition's lag is back at 0; the peaks seen."""
    seen = {"applied_rate": 0.0, "lag": 0.0}

    def caught_up() -> bool:
        rate = query(base, "sum(rate(recd_events_applied_total[10s]))")
        seen["applied_rate"] = max(seen["applied_rate"], *rate.values(), 0.0)
        lags = lag_by_partition(base, settings.events_topic)
        seen["lag"] = max(seen["lag"], *lags.values(), 0.0)
        consumed = sum(query(base, "sum(recd_events_total)").values())
        return consumed == EVENTS and len(lags) == 4 and not any(lags.values()) and seen["applied_rate"] > 0

    wait_until(caught_up, 35, "Prometheus to see all events applied and the lag back at 0")
    return seen


@pytest.mark.timeout(60)
def test_prometheus_sees_ingest_rate_and_lag_rise_and_fall(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)  # 4 partitions
    publish(settings)  # before recd starts, so it has a backlog to catch up on, as after a deploy or an outage
    port = free_port()
    config = write_config(tmp_path, f"127.0.0.1:{port}")
    # tiny batches: the catch-up lasts several 1 s scrapes even on a fast machine (20 finished between two)
    env = {"RECD_METRICS_PORT": str(port), "RECD_POLL_MAX_RECORDS": "10"}
    with running_prometheus(config, tmp_path) as prom, running_daemon(settings, tmp_path / "recd.log", "ingest", **env):
        wait_until(lambda: query(prom, 'up{job="recd", component="daemon"} == 1'), 15, "a successful scrape")
        seen = watch_catch_up(prom, settings)
        peak = query(prom, f'max(max_over_time(recd_consumer_lag{{topic="{settings.events_topic}"}}[1m]))')
        # deploy/prometheus/rules.yml is loaded and evaluated over the same series
        wait_until(lambda: recorded_lag(prom).get(settings.events_topic) == 0, 10, "recd:consumer_lag:sum at 0")
        assert sum(query(prom, "recd:events_applied:rate1m").values()) > 0
        assert list(query(prom, "recd_ready").values()) == [1.0], "a healthy daemon reports ready"
        assert sum(query(prom, "recd_redis_used_memory_bytes").values()) > 1_000_000, "Redis memory is sampled"
    assert seen["applied_rate"] > 0, seen
    assert sum(peak.values()) > EVENTS / 20, f"Prometheus never saw the backlog as consumer lag: {peak}"
