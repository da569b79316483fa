"""recd on an encrypted Redis as a least-privilege ACL user: a real redis-server with TLS (a CA made here with
openssl, client certificates required) and the ACL line of docs/operations.md; ingest, train and serve do
their work with exactly those rights, and a user that lacks one stops with a message naming it."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from daemon.dev.embedded import free_port
from daemon.dev.synthetic import SyntheticSpec, encode, synthetic_events, synthetic_profiles
from daemon.runtime.app import build_ingest, build_server, build_trainer, build_watcher
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.redisconn import FatalRedisError
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader
from tests.kafkatools import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

OPERATIONS = Path(__file__).parent.parent / "docs" / "operations.md"
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class TlsRedis:
    port: int
    folder: Path

    def file(self, name: str) -> str:
        return str(self.folder / name)

    def admin(self) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            ssl=True,
            ssl_ca_certs=self.file("ca.pem"),
            ssl_certfile=self.file("client.pem"),
            ssl_keyfile=self.file("client.key"),
        )


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both signed by the CA."""
    _openssl(
        folder,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=recd-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        _openssl(
            folder,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        _openssl(
            folder,
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *extra,
        )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder = tmp_path_factory.mktemp("tls")
    _certificates(folder)
    port = free_port()
    args = [
        "redis-server",
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-cert-file",
        "server.pem",
        "--tls-key-file",
        "server.key",
        "--tls-ca-cert-file",
        "ca.pem",
        "--tls-auth-clients",
        "yes",
        "--dir",
        str(folder),
    ]
    proc = subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsRedis(port, folder)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.admin().ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline and proc.poll() is None, "the TLS redis-server did not start"
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


def acl_line(prefix: str, user: str) -> str:
    """The ACL line docs/operations.md gives, for this test's prefix and user."""
    text = OPERATIONS.read_text()
    found = re.search(r"^ACL SETUSER recd on >PASSWORD (.+)$", text, re.M)
    assert found, "docs/operations.md gives no ACL line"
    rules = found.group(1).replace("~recd:*", f"~{prefix}*")
    return f"ACL SETUSER {user} on >{PASSWORD} {rules}"


def tls_settings(server: TlsRedis, user: str, prefix: str, base: Settings) -> Settings:
    return base.replace(
        redis_url=f"rediss://{user}:{PASSWORD}@127.0.0.1:{server.port}/0",
        redis_cluster=False,
        redis_ca_file=server.file("ca.pem"),
        redis_cert_file=server.file("client.pem"),
        redis_key_file=server.file("client.key"),
        redis_prefix=prefix,
    )


def _add_user(server: TlsRedis, line: str) -> None:
    server.admin().execute_command("ACL", "SETUSER", *line.split()[2:])


def _publish(settings: Settings, events: int = 3000) -> int:
    spec = SyntheticSpec(users=60, items=80, clusters=3, seed=9, start_ms=int(time.time() * 1000) - 600_000)
    produce_raw(
        settings,
        settings.profiles_topic,
        [(p["user_id"].encode(), encode(p)) for p in synthetic_profiles(spec, spec.start_ms)],
    )
    return produce_raw(
        settings, settings.events_topic, [(e["user_id"].encode(), encode(e)) for e in synthetic_events(spec, events)]
    )


@pytest.mark.slow
def test_ingest_train_and_serve_over_tls_with_the_documented_acl(
    tls_redis: TlsRedis, broker: str, tmp_path: Path
) -> None:
    prefix = f"tls{uuid.uuid4().hex[:6]}:"
    _add_user(tls_redis, acl_line(prefix, "recd"))
    base = load_settings(
        environ={},
        kafka_bootstrap=broker,
        events_topic=f"ev-{prefix[:-1]}",
        profiles_topic=f"pr-{prefix[:-1]}",
        items_topic=f"it-{prefix[:-1]}",
        consumer_group=f"g-{prefix[:-1]}",
        session_timeout_ms=6000,
        model_dir=str(tmp_path / "models"),
        train_min_events=1,
        model_poll_s=0.0,
        redis_shards=8,
    )
    settings = tls_settings(tls_redis, "recd", prefix, base)
    sent = _publish(settings)
    metrics = Metrics(CollectorRegistry())
    ingest = build_ingest(settings, metrics)
    reader = StateReader(topology_of(settings), keys_of(settings))
    try:
        deadline = time.monotonic() + 60
        while reader.totals()["applied"] < sent:
            assert time.monotonic() < deadline, "events not ingested over TLS"
            ingest.step()
    finally:
        ingest.shutdown()
    assert build_trainer(settings, metrics).run_once().status == "published"
    server = build_server(settings, metrics, build_watcher(settings, metrics))
    try:
        deadline = time.monotonic() + 60
        while reader.queued():
            assert time.monotonic() < deadline, "lists not written over TLS"
            server.step()
        server.flush()
    finally:
        server.shutdown()
    lists = [reader.client.get(reader.keys.rec(u)) for u in reader.recently_served(5)]
    assert lists and all(lists)


def test_a_user_without_a_right_gets_an_error_naming_it(tls_redis: TlsRedis, broker: str) -> None:
    prefix = f"tls{uuid.uuid4().hex[:6]}:"
    _add_user(tls_redis, acl_line(prefix, "nozadd") + " -zadd")
    base = load_settings(
        environ={},
        kafka_bootstrap=broker,
        events_topic=f"ev-{prefix[:-1]}",
        profiles_topic=f"pr-{prefix[:-1]}",
        items_topic=f"it-{prefix[:-1]}",
        consumer_group=f"g-{prefix[:-1]}",
        session_timeout_ms=6000,
        redis_shards=8,
    )
    settings = tls_settings(tls_redis, "nozadd", prefix, base)
    _publish(settings, 200)
    ingest = build_ingest(settings, Metrics(CollectorRegistry()))
    try:
        with pytest.raises(FatalRedisError, match=r"line [0-9]+: ZADD\).*can't run this command"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ingest.step()
    finally:
        ingest.shutdown()
