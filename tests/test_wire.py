"""Hand-packed commands (daemon/serve/wire.py) against a real Redis: what they write, replies, refusals, drops."""

from __future__ import annotations

import socket
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from daemon.serve.wire import Commands, send

# ``send`` writes packed commands on one connection of one node's pool (on a cluster RoutedCommands groups them
# per node first); the keys here are in different slots, so these tests are for one Redis only.
pytestmark = pytest.mark.single_redis


def test_set_many_writes_every_value_with_and_without_a_ttl(rclient: redis.Redis, prefix: str) -> None:
    commands = Commands()
    values = {f"{prefix}a".encode(): b'{"x": "\xc3\xa9\\r\\n"}', f"{prefix}b".encode(): b"\r\n$3\r\n*1"}
    commands.set_many(values.items(), ttl_s=600)
    commands.set_many([(f"{prefix}c".encode(), b"")], ttl_s=None)
    assert send(rclient, commands) == [b"OK"] * 3
    for key, value in values.items():
        assert rclient.get(key) == value
        assert 590 <= rclient.ttl(key) <= 600
    assert rclient.get(f"{prefix}c") == b"" and rclient.ttl(f"{prefix}c") == -1


def test_add_packs_str_and_int_arguments_and_returns_replies_in_order(rclient: redis.Redis, prefix: str) -> None:
    commands = Commands()
    commands.add("ZADD", f"{prefix}z", 1500, "usér", 20, "b")
    commands.add("ZREM", f"{prefix}z", "b", "absent")
    commands.add("ZSCORE", f"{prefix}z", "usér")
    added, removed, score = send(rclient, commands)
    assert (added, removed, float(score)) == (2, 1, 1500.0)
    assert rclient.zrange(f"{prefix}z", 0, -1, withscores=True) == [("usér".encode(), 1500.0)]


def test_a_refused_command_is_raised_after_the_others_ran(rclient: redis.Redis, prefix: str) -> None:
    rclient.set(f"{prefix}s", "text")
    commands = Commands()
    commands.add("ZADD", f"{prefix}s", 1, "m")  # wrong type: refused
    commands.set_many([(f"{prefix}after".encode(), b"v")], ttl_s=None)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send(rclient, commands)
    assert rclient.get(f"{prefix}after") == b"v"
    assert rclient.ping()  # the pooled connection is still usable


def test_nothing_to_send_sends_nothing() -> None:
    assert send(redis.Redis(port=1), Commands()) == []  # no connection is even tried


def test_a_lost_connection_is_raised_and_its_connection_not_reused() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = redis.Redis(port=listener.getsockname()[1], socket_timeout=1, retry=Retry(NoBackoff(), 0))

    commands = Commands()
    commands.add("PING")

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.close()

    server = threading.Thread(target=hang_up)
    server.start()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):  # hung up mid-handshake or read
        send(client, commands)
    server.join()
    listener.close()
    idle = client.connection_pool._available_connections  # type: ignore[attr-defined]
    assert len(idle) == 1 and idle[0]._sock is None  # dropped, not returned half-read
