"""deploy/'s monitoring checked against the code: the metric names a running daemon exports, what the
dashboards and alerts cover, the runbooks, and promtool on the Prometheus config and rules (the settings,
compose, k8s and image files: tests/test_deploy_manifests.py).

Nothing here runs Docker or Kubernetes (these machines have neither); Prometheus itself is exercised
by tests/test_prometheus.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.dev.embedded import daemon_env
from daemon.runtime.settings import Settings
from tests.deployfiles import DASHBOARDS, DEPLOY, OPS_GUIDE, ROOT, load_yaml

RULES = DEPLOY / "prometheus" / "rules.yml"
K8S_RULES = DEPLOY / "k8s" / "prometheusrule.yaml"
METRIC = re.compile(r"\brecd_[A-Za-z0-9_]+")
RECORDED = re.compile(r"\brecd:[A-Za-z0-9_:]+")
# Series names a metric family of each type puts on the wire (prometheus-client appends _total to counters).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
PROMTOOL_MISSING = "promtool is not on PATH: install Debian's prometheus package (apt-get install prometheus; CI does)"


# ----- reading the files


def walk_exprs(node: Any) -> Iterator[str]:
    """Every PromQL string in a Grafana dashboard (panel targets, annotations, template queries)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from walk_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_exprs(item)


def rule_groups() -> dict[str, list[dict[str, Any]]]:
    """rules.yml and the PrometheusRule resource, by file name."""
    return {RULES.name: load_yaml(RULES)[0]["groups"], K8S_RULES.name: load_yaml(K8S_RULES)[0]["spec"]["groups"]}


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)[0]["groups"] for rule in group["rules"]]


@functools.cache
def recording_rules() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in all_rules() if "record" in r}


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in all_rules() if "alert" in r}


def dashboard_exprs() -> list[str]:
    return [e for path in DASHBOARDS for e in walk_exprs(json.loads(path.read_text(encoding="utf-8")))]


def expand(expr: str) -> str:
    """A PromQL expression with every recording rule it uses replaced by (its expression)."""
    records = recording_rules()
    for _ in range(5):
        expr = RECORDED.sub(lambda m: f"({records[m.group()]})" if m.group() in records else m.group(), expr)
    return expr


def referenced_metrics() -> dict[str, set[str]]:
    """recd_* series name -> the files whose PromQL uses it."""
    used: dict[str, set[str]] = {}
    sources = [(p.name, e) for p in DASHBOARDS for e in walk_exprs(json.loads(p.read_text(encoding="utf-8")))]
    for name, groups in rule_groups().items():
        sources += [(name, r["expr"]) for g in groups for r in g["rules"]]
    for where, expr in sources:
        for metric in METRIC.findall(expr):
            used.setdefault(metric, set()).add(where)
    return used


def exported_series(text: str) -> set[str]:
    """Every series name the scraped text can carry, including families that have no children yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def test_exported_series_maps_suffixes_by_type() -> None:
    text = (
        "# HELP a_total c\n# TYPE a_total counter\n# HELP h h\n# TYPE h histogram\n# HELP g g\n# TYPE g gauge\ng 1.0\n"
    )
    names = exported_series(text)
    assert {"a_total", "a_created", "h_bucket", "h_count", "h_sum", "g"} <= names
    assert not {"a", "h", "g_total", "a_total_total"} & names


# ----- the daemon, as ops run it


def wait_for_http(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 45.0) -> str:
    """The daemon's HTTP base URL, once /metrics answers (the port is read from its log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"recd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        found = re.search(r"http on ([\d.]+):(\d+)", log.read_text(errors="replace"))
        if found:
            base = f"http://{found.group(1)}:{found.group(2)}"
            with contextlib.suppress(OSError), urllib.request.urlopen(base + "/metrics", timeout=2):
                return base
        time.sleep(0.1)
    raise AssertionError(f"recd served no /metrics within {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_daemon(settings: Settings, log: Path, roles: str = "ingest,serve", **env: str) -> Iterator[str]:
    """`recd run --roles ROLES` as a subprocess; yields its HTTP base URL; SIGTERM and wait on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--roles", roles],
            env=daemon_env(settings, **env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield wait_for_http(proc, log)
    finally:
        code = stop(proc, 30)
    assert code == 0, f"recd did not exit cleanly on SIGTERM ({code}):\n{log.read_text()[-3000:]}"


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, wait, SIGKILL if it would not go; the exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return -signal.SIGKILL


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
@pytest.mark.single_redis  # the metric names a daemon exports do not depend on the Redis behind it
def test_every_metric_in_dashboards_and_rules_is_exported(settings: Settings, tmp_path: Path) -> None:
    used = referenced_metrics()
    assert len(used) > 20, used  # the extraction found the dashboards' and rules' metrics
    with running_daemon(settings, tmp_path / "recd.log") as base:
        status, body = http_get(base + "/metrics")
        probes = {path: http_get(base + path)[0] for path in ("/healthz", "/readyz")}
    assert status == 200
    exported = exported_series(body.decode())
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"not exported by recd run --roles ingest,serve: {missing}"
    assert probes == {"/healthz": 200, "/readyz": 200}  # what the k8s probes ask, on the metrics port


# ----- dashboards and alerts cover what ops need

# (what, metric, label it must be split by, or None)
DASHBOARD_NEEDS = [
    ("ingest rate by type", "recd_events_total", "type"),
    ("DLQ rate by reason", "recd_events_invalid_total", "reason"),
    ("consumer lag per partition", "recd_consumer_lag", "partition"),
    ("ingest batch latency", "recd_ingest_batch_seconds_bucket", None),
    ("Redis latency", "recd_redis_seconds_bucket", "op"),
    ("freshness percentiles", "recd_freshness_seconds_bucket", None),
    ("lists written by source", "recd_lists_written_total", "source"),
    ("lookup latency", "recd_lookup_seconds_bucket", "endpoint"),
    ("lookup errors", "recd_lookups_total", "status"),
    ("model version", "recd_model_info", "version"),
    ("model age", "recd_model_published_timestamp_seconds", None),
    ("training loss", "recd_train_loss", None),
    ("progress of long steps", "recd_step_progress_ratio", "step"),
    ("time left of long steps", "recd_step_eta_seconds", "step"),
    ("training duration", "recd_train_seconds_sum", None),
    ("held-out metrics", "recd_model_quality", "metric"),
    ("model search: winner and configured setting", "recd_model_search_quality", "setting"),
    ("Redis memory", "recd_redis_used_memory_bytes", None),
]


def splits_by(expr: str, label: str) -> bool:
    return bool(re.search(rf"\bby\s*\([^)]*\b{label}\b", expr))


@pytest.mark.parametrize(("what", "metric", "label"), DASHBOARD_NEEDS, ids=[n[0] for n in DASHBOARD_NEEDS])
def test_dashboards_cover(what: str, metric: str, label: str | None) -> None:
    exprs = [expand(e) for e in dashboard_exprs()]
    using = [e for e in exprs if re.search(rf"\b{metric}\b", e)]
    assert using, f"no dashboard panel shows {what} ({metric})"
    if label is not None:
        assert any(splits_by(e, label) for e in using), f"{what}: no panel splits {metric} by {label}: {using}"


def test_dashboard_freshness_percentiles_and_recorded_series_exist() -> None:
    exprs = dashboard_exprs()
    fresh = [e for e in map(expand, exprs) if "recd_freshness_seconds_bucket" in e]
    quantiles = {float(q) for e in fresh for q in re.findall(r"histogram_quantile\(\s*([\d.]+)", e)}
    assert {0.5, 0.95, 0.99} <= quantiles
    unknown = {r for e in exprs for r in RECORDED.findall(e)} - set(recording_rules())
    assert not unknown, f"dashboards use recording rules that rules.yml does not define: {unknown}"


# alert -> (metric or series its expression must use, after expanding recording rules)
ALERT_NEEDS = {
    "RecdConsumerLagGrowing": "recd_consumer_lag",
    "RecdDeadLetterRateHigh": "recd_events_invalid_total",
    "RecdModelStale": "recd_model_published_timestamp_seconds",
    "RecdFreshnessSLOBreached": "recd_freshness_seconds_bucket",
    "RecdDaemonDown": 'up{job="recd"}',
    "RecdNotReady": "recd_ready",
}


def test_alert_rules_cover_the_failures_ops_must_hear_about() -> None:
    found = alerts()
    for name, needle in ALERT_NEEDS.items():
        assert name in found, f"missing alert {name}"
        assert needle in expand(found[name]["expr"]), f"{name} does not look at {needle}"
    fresh = expand(found["RecdFreshnessSLOBreached"]["expr"])
    assert "histogram_quantile(0.99" in fresh and re.search(r">\s*1\s*$", fresh.strip()), fresh
    assert "deriv(" in found["RecdConsumerLagGrowing"]["expr"]  # growing, not merely high


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_severity_and_a_runbook_in_the_operations_guide() -> None:
    guide = OPS_GUIDE.read_text(encoding="utf-8")
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.+)$", guide, flags=re.M)}
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md" and anchor in anchors, f"{name}: runbook {url} not in {OPS_GUIDE}"


def test_prometheusrule_is_rendered_from_rules_yml() -> None:
    spec = importlib.util.spec_from_file_location("render_rules", DEPLOY / "k8s" / "render_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(RULES.read_text(encoding="utf-8"))
    assert K8S_RULES.read_text(encoding="utf-8") == expected, "run: python deploy/k8s/render_rules.py"


# ----- files parse, promtool agrees


def test_every_yaml_and_json_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
    assert len(files) >= 15, files
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            assert load_yaml(path), f"{path} is empty"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(PROMTOOL_MISSING)
    return found


def test_promtool_checks_rules_and_config(tmp_path: Path) -> None:
    for name in ("prometheus.yml", "rules.yml"):  # the layout of /etc/prometheus in compose
        shutil.copy(DEPLOY / "prometheus" / name, tmp_path / name)
    checks = [["check", "rules", str(RULES)], ["check", "config", str(tmp_path / "prometheus.yml")]]
    for args in checks:
        done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts() -> None:
    tests = DEPLOY / "prometheus" / "rules_test.yml"
    done = subprocess.run(
        [promtool(), "test", "rules", tests.name],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"promtool test rules:\n{done.stdout}\n{done.stderr}"
    tested = {a["alertname"] for t in load_yaml(tests)[0]["tests"] for a in t.get("alert_rule_test", [])}
    assert set(alerts()) <= tested, f"alerts without a promtool unit test: {set(alerts()) - tested}"
