"""The command line as a user meets it: one clear line per error, options anywhere, help with defaults,
no library chatter, a broker for a daemon run by hand."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.dev.embedded import free_port
from daemon.runtime.cli import _parser, main
from daemon.runtime.settings import unknown_variables


def recd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RECD_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], env=full, capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr and no traceback; returns it."""
    assert done.returncode != 0, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recd: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_rolling_back_to_a_missing_version_is_one_line(tmp_path: Path) -> None:
    done = recd("model", "rollback", "--to", "nonexistent", env={"RECD_MODEL_DIR": str(tmp_path)})
    assert "cannot roll back to 'nonexistent'" in one_line_error(done) and done.returncode == 1


def test_a_missing_config_file_is_one_line_with_code_2() -> None:
    done = recd("model", "list", "--config", "/no/such/recd.toml")
    assert "/no/such/recd.toml" in one_line_error(done) and done.returncode == 2


def test_config_is_accepted_after_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    cfg = tmp_path / "recd.toml"
    cfg.write_text(f'model_dir = "{models}"\n')
    for argv in (["model", "list", "--config", str(cfg)], ["--config", str(cfg), "model", "list"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == []
    assert _parser().parse_args(["model", "list", "--config", "x.toml"]).config == "x.toml"
    assert _parser().parse_args(["--config", "y.toml", "model", "list"]).config == "y.toml"


def test_unknown_recd_variables_are_warned_with_the_closest_setting() -> None:
    warnings = unknown_variables(
        {"RECD_REDIS_URLL": "x", "RECD_ZZZ": "1", "RECD_TOP_K": "5", "RECD_CONFIG": "a", "PATH": "/bin"}
    )
    assert warnings == [
        "RECD_REDIS_URLL is not a recd setting and is ignored; did you mean RECD_REDIS_URL?",
        "RECD_ZZZ is not a recd setting and is ignored; `recd --help` lists every setting",
    ]
    done = recd("model", "presets", env={"RECD_HISTROY_LEN": "5"})
    assert done.returncode == 0 and "RECD_HISTROY_LEN is not a recd setting" in done.stderr
    assert "did you mean RECD_HISTORY_LEN?" in done.stderr


def test_subcommand_help_shows_defaults_and_model_names() -> None:
    produce = recd("produce", "--help").stdout
    for option, default in (("--users", "2000"), ("--items", "1000"), ("--seed", "0")):
        line = re.search(rf"{option} \w+\s+(.*?)(?=\n  -|\Z)", produce, re.S)
        assert line and f"(default: {default})" in " ".join(line.group(1).split()), produce
    assert "(default: 60000)" in " ".join(recd("demo", "--help").stdout.split())
    evaluate = " ".join(recd("evaluate", "--help").stdout.split())
    for name in ("ials_tail", "item2vec_loguniform", "mf_bpr", "ncf", "popularity", "als", "gensim"):
        assert name in evaluate


def test_commands_that_import_faiss_print_no_library_chatter(redis_url: str, tmp_path: Path) -> None:
    done = recd(
        "recommend",
        "nobody",
        env={"RECD_REDIS_URL": redis_url, "RECD_MODEL_DIR": str(tmp_path), "RECD_REDIS_PREFIX": "test-cli-chatter:"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user_id"] == "nobody"
    assert done.stderr == "", done.stderr  # faiss's loader logs ~12 INFO lines; they stay out
    loud = recd(
        "recommend",
        "nobody",
        env={"RECD_REDIS_URL": redis_url, "RECD_LOG_LEVEL": "DEBUG", "RECD_REDIS_PREFIX": "test-cli-chatter:"},
    )
    assert "faiss" in loud.stderr  # ...unless RECD_LOG_LEVEL asks for them


def test_without_a_broker_commands_say_so_in_recds_words() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    line = one_line_error(recd("topics", env={"RECD_KAFKA_BOOTSTRAP": nowhere}, timeout=30))
    assert nowhere in line and "recd dev up" in line
    run = recd(
        "run", "--roles", "ingest", env={"RECD_KAFKA_BOOTSTRAP": nowhere, "RECD_STARTUP_WAIT_S": "2"}, timeout=60
    )
    assert run.returncode == 1
    assert "waiting for the Kafka broker at " + nowhere in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"recd: no Kafka broker answered at {nowhere} within 2s")
    assert "Traceback" not in run.stderr


@pytest.mark.integration
@pytest.mark.single_redis  # only the broker is used: running it again for the Redis Cluster would add nothing
def test_topics_prints_each_topic(settings: object) -> None:
    from daemon.runtime.settings import Settings

    assert isinstance(settings, Settings)
    env = {
        "RECD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RECD_EVENTS_TOPIC": settings.events_topic,
        "RECD_PROFILES_TOPIC": settings.profiles_topic,
        "RECD_ITEMS_TOPIC": settings.items_topic,
    }
    first, again = recd("topics", env=env), recd("topics", env=env)
    assert first.returncode == 0 and again.returncode == 0, first.stderr
    assert f"{settings.events_topic}: created" in first.stdout
    assert f"{settings.events_topic}.dlq: created" in first.stdout
    assert f"{settings.profiles_topic}: exists" in again.stdout
    assert f"{settings.items_topic}.dlq: created" in first.stdout


@pytest.mark.integration
def test_dev_up_starts_a_broker_prints_the_environment_and_stops_on_ctrl_c(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECD_")}
    env["RECD_REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "dev", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    exports = dict(re.findall(r"export (\w+)=(\S+)", proc.stdout.readline() + proc.stdout.readline()))
    assert exports["RECD_REDIS_URL"] == redis_url
    host, port = exports["RECD_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    assert recd("topics", env=exports).returncode == 0  # a working broker
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def test_evaluate_prints_a_table_and_json_on_request(tmp_path: Path) -> None:
    data = tmp_path / "tiny.tsv"
    data.write_text(
        "".join(f"u{u}\ti{(u * 3 + k) % 40}\t1\t{1_600_000_000 + 60 * k}\n" for u in range(60) for k in range(8))
    )
    table = recd("evaluate", str(data), "--models", "popularity")
    assert table.returncode == 0, table.stderr
    header, rule, row = [line for line in table.stdout.splitlines() if line.strip()][-3:]
    assert header.split()[:3] == ["model", "recall@10", "ndcg@10"] and set(rule) <= {"-", " "}
    assert row.split()[0] == "popularity"
    as_json = recd("evaluate", str(data), "--models", "popularity", "--json")
    assert as_json.returncode == 0 and "popularity" in json.loads(as_json.stdout)["models"]
