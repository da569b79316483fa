"""Commands packed by hand into Redis's wire format (RESP) for serving's one hot write.

A serve step writes ~1,000 lists with their TTL, the users' last activity and
the claim's acknowledgement. Through a redis-py pipeline, 1,024 ``SET key value
EX ttl`` took 14-16 ms of Python, packing each command and parsing its reply
(py-spy: ~20% of a serve worker's samples, on its writer thread); packed here
with one ``%``-format per command and sent in one ``sendall``, 4.6-4.7 ms, most
of it reading the replies. ``Commands`` collects the packed commands; ``send``
writes them on one pooled connection and reads every reply. ``RoutedCommands``
keeps one ``Commands`` per node that owns the keys (one for a single Redis) and
sends each on its node.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

import redis
from redis.exceptions import ResponseError

from daemon.runtime.redisconn import Topology


def _bulk(arg: bytes | str | int) -> bytes:
    data = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Commands:
    """Packed commands to send together (in order, no transaction) with ``send``; one part per command."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def add(self, *args: bytes | str | int) -> None:
        """One command: ``add("ZREM", key, member, ...)``; str arguments go as UTF-8, ints as decimal text."""
        self.parts.append(b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args))

    def set_many(self, items: Iterable[tuple[bytes, bytes]], ttl_s: int | None) -> None:
        """``SET key value [EX ttl_s]`` for each (key, value): the hot path, one format per command."""
        head, tail = b"*3\r\n$3\r\nSET\r\n", b""
        if ttl_s is not None:
            head, tail = b"*5\r\n$3\r\nSET\r\n", _bulk("EX") + _bulk(int(ttl_s))
        for key, value in items:
            self.parts.append(b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (head, len(key), key, len(value), value, tail))


def send(client: redis.Redis, commands: Commands) -> list[Any]:
    """Send ``commands`` on one connection of ``client``'s pool and read all their replies.

    A command Redis refuses does not stop the others (as in a pipeline); the
    first refusal is raised once every reply is read. A connection or timeout
    error drops the connection (its replies are unknown) and is raised."""
    if not commands.parts:
        return []
    pool = client.connection_pool
    conn: Any = pool.get_connection()  # redis-py types its connections loosely
    try:
        conn.send_packed_command([b"".join(commands.parts)])  # one sendall, not one per command
        replies = [_reply(conn) for _ in commands.parts]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    refused = [r for r in replies if isinstance(r, ResponseError)]
    if refused:
        raise refused[0]
    return replies


def _reply(conn: Any) -> Any:
    try:
        return conn.read_response()
    except ResponseError as err:  # the connection is still in step: keep reading
        return err


class RoutedCommands:
    """Packed commands grouped by the node that owns each command's key."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._single = None if topology.cluster else Commands()
        self._by_node: dict[int, tuple[redis.Redis, Commands]] = {}

    def for_key(self, key: str) -> Commands:
        """The commands that go to ``key``'s node (add to them commands on that key or its slot)."""
        if self._single is not None:
            return self._single
        node = self.topology.node_of(key)
        return self._by_node.setdefault(id(node), (node, Commands()))[1]

    def send(self) -> None:
        """Send every node's commands on that node, all nodes at once (raises the first refusal, as ``send``)."""
        if self._single is not None:
            send(self.topology.node_of(""), self._single)  # a single Redis is its own one node
            return
        outcomes = self.topology.on_each([partial(send, node, cmds) for node, cmds in self._by_node.values()])
        errors = [o for o in outcomes if isinstance(o, Exception)]
        if errors:
            if any(isinstance(e, redis.RedisError) for e in errors):
                self.topology.refresh()
            raise errors[0]
