"""What the ingest and freshness benchmarks share to run on one Redis or a Redis Cluster, and to say how the
load spread over it.

``--redis-cluster N`` starts N primaries here (``--cluster-replicas R`` each, daemon/dev/cluster.py); with
N = 0 and ``RECD_REDIS_CLUSTER=true`` the cluster at ``RECD_REDIS_URL`` is used; else one Redis.
``--wait-replicas W`` sets RECD_REDIS_WAIT_REPLICAS. Figures:

- ``redis_cpu_us_per_event``: Redis CPU (``INFO cpu``: used_cpu_sys + used_cpu_user) over the measured phase,
  summed over the primaries, per event;
- ``primary_write_share``: each primary's share of the write commands of the measured phase (``INFO
  commandstats``: calls of the commands in ``WRITE_COMMANDS``; a script's own commands count as well as its
  EVALSHA), with the largest and the smallest;
- ``max_slot_write_share``: the largest share of the workload's write units any one slot takes, computed from
  the workload (``SlotLoad``), and ``slot_primary_share``: the same units by the primary owning their slot;
- ``shards``, ``primaries``, ``replicas`` (the fewest any primary has), ``wait_replicas`` (the most any
  primary's writes wait for).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bench.common import drop_prefix
from bench.groundtruth import Expected
from daemon.dev.cluster import LocalCluster, start_redis_cluster
from daemon.dev.embedded import LocalProcess, start_broker
from daemon.runtime.keys import Keys
from daemon.runtime.options import topology_of
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings, load_settings
from daemon.runtime.state import StateReader

_WRITE_NAMES = (  # the write commands recd or a benchmark may send, or a script may run
    "evalsha eval evalsha_ro fcall set setex psetex setnx mset msetnx getset getdel append setrange incr incrby "
    "incrbyfloat decr decrby del unlink expire pexpire expireat pexpireat persist rename renamenx copy restore "
    "hset hsetnx hmset hdel hincrby hincrbyfloat zadd zincrby zrem zremrangebyscore zremrangebyrank "
    "zremrangebylex zpopmin zpopmax zunionstore zinterstore zdiffstore zrangestore sadd srem spop smove "
    "sunionstore sinterstore sdiffstore lpush rpush lpushx rpushx lpop rpop lrem ltrim lset linsert lmove "
    "setbit bitop bitfield pfadd pfmerge xadd xtrim xdel"
)
WRITE_COMMANDS = frozenset(_WRITE_NAMES.split())


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """``--redis-cluster``, ``--cluster-replicas`` and ``--wait-replicas``."""
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        help="start a local Redis Cluster of this many primaries (0: RECD_REDIS_URL, a cluster when "
        "RECD_REDIS_CLUSTER=true)",
    )
    parser.add_argument("--cluster-replicas", type=int, default=0, help="replicas per primary of --redis-cluster")
    parser.add_argument(
        "--wait-replicas", type=int, default=None, help="RECD_REDIS_WAIT_REPLICAS (-1 auto; default: as set)"
    )


@dataclass
class RedisTarget:
    """The Redis a run writes to, and the local cluster it started (to stop)."""

    url: str
    cluster: bool
    wait_replicas: int
    local: LocalCluster | None = None

    def settings(self) -> dict[str, Any]:
        """Settings overrides naming this Redis."""
        return {"redis_url": self.url, "redis_cluster": self.cluster, "redis_wait_replicas": self.wait_replicas}

    def env(self) -> dict[str, str]:
        """The same, as RECD_* variables for the daemons a benchmark starts."""
        return {
            "RECD_REDIS_URL": self.url,
            "RECD_REDIS_CLUSTER": "true" if self.cluster else "false",
            "RECD_REDIS_WAIT_REPLICAS": str(self.wait_replicas),
        }

    def pids(self) -> dict[str, int]:
        """``redis-<port>`` -> pid of every node of the cluster started here (replicas too)."""
        return {f"redis-{port}": node.proc.pid for port, node in (self.local.nodes if self.local else {}).items()}

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
            shutil.rmtree(self.local.folder, ignore_errors=True)


def redis_target(args: argparse.Namespace, single_url: str) -> RedisTarget:
    """The Redis of a run: a local cluster (``--redis-cluster N``), the cluster at RECD_REDIS_URL
    (RECD_REDIS_CLUSTER=true), else the single Redis at ``single_url``."""
    wait = args.wait_replicas
    if wait is None:
        wait = int(os.environ.get("RECD_REDIS_WAIT_REPLICAS", "-1"))
    if args.redis_cluster > 0:
        folder = Path(tempfile.mkdtemp(prefix="recd-bench-cluster-"))
        print(
            f"starting a Redis Cluster: {args.redis_cluster} primaries x {args.cluster_replicas} replicas", flush=True
        )
        local = start_redis_cluster(folder, args.redis_cluster, args.cluster_replicas)
        return RedisTarget(local.url, True, wait, local)
    if os.environ.get("RECD_REDIS_CLUSTER", "").strip().lower() in ("1", "true", "yes", "on"):
        return RedisTarget(os.environ["RECD_REDIS_URL"], True, wait)
    return RedisTarget(single_url, False, wait)


@dataclass
class BenchWorld:
    """What one daemon benchmark run works in (``bench_world``)."""

    settings: Settings
    folder: Path  # the broker's log and the model snapshots
    target: RedisTarget
    broker: LocalProcess | None  # the embedded broker started for the run (None: RECD_KAFKA_BOOTSTRAP)


@contextmanager
def bench_world(args: argparse.Namespace, name: str) -> Iterator[BenchWorld]:
    """A folder, the embedded broker (unless RECD_KAFKA_BOOTSTRAP is set), the run's Redis (``redis_target``)
    and settings with topics, group and key prefix of the run's own. At the end its keys are deleted (a
    cluster started here goes whole), what it started is stopped and the folder removed."""
    tag = uuid.uuid4().hex[:8]
    folder = Path(f"var/bench-{name}-{tag}")
    folder.mkdir(parents=True, exist_ok=True)
    broker = None if "RECD_KAFKA_BOOTSTRAP" in os.environ else start_broker(folder)
    target = None
    try:
        target = redis_target(args, os.environ.get("RECD_REDIS_URL", "redis://127.0.0.1:6379/0"))
        settings = load_settings(
            None,
            None,
            **({"kafka_bootstrap": broker.address} if broker else {}),
            **target.settings(),
            redis_prefix=f"bench-{name}-{tag}:",
            events_topic=f"{name}-{tag}",
            profiles_topic=f"{name}-{tag}.profiles",
            items_topic=f"{name}-{tag}.items",
            consumer_group=f"{name}-{tag}",
        )
        try:
            yield BenchWorld(settings, folder, target, broker)
        finally:
            if target.local is None:
                drop_prefix(topology_of(settings).client, settings.redis_prefix)
    finally:
        if broker:
            broker.stop()
        if target:
            target.stop()
        shutil.rmtree(folder, ignore_errors=True)


def node_name(node: redis.Redis) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


@dataclass(frozen=True)
class NodeLoad:
    cpu_s: float  # used_cpu_sys + used_cpu_user so far
    writes: int  # calls of write commands so far


def primary_loads(topology: Topology) -> dict[str, NodeLoad]:
    """Each primary's CPU seconds and write-command calls so far."""
    out = {}
    for node in topology.primaries():
        cpu: Any = node.info("cpu")
        stats: Any = node.info("commandstats")
        writes = sum(int(v["calls"]) for name, v in stats.items() if name.removeprefix("cmdstat_") in WRITE_COMMANDS)
        out[node_name(node)] = NodeLoad(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), writes)
    return out


def load_figures(before: dict[str, NodeLoad], after: dict[str, NodeLoad], events: int) -> dict[str, Any]:
    """``redis_cpu_us_per_event`` and ``primary_write_share`` between two ``primary_loads`` readings."""
    zero = NodeLoad(0.0, 0)
    cpu = sum(load.cpu_s - before.get(name, zero).cpu_s for name, load in after.items())
    writes = {name: load.writes - before.get(name, zero).writes for name, load in after.items()}
    total = max(1, sum(writes.values()))
    shares = {name: round(n / total, 4) for name, n in sorted(writes.items())}
    return {
        "redis_cpu_us_per_event": round(1e6 * cpu / max(1, events), 2),
        "primary_write_share": {"max": max(shares.values()), "min": min(shares.values()), "by_primary": shares},
        "primary_writes": sum(writes.values()),
    }


class SlotLoad:
    """The workload's write units by cluster slot: an event is one in its user's shard slot, a new item one in
    the ``{items}`` slot, a list written one in its ``rec:`` key's slot."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.units: Counter[int] = Counter()
        self.per_user: Counter[str] = Counter()  # a user's events: all in one slot, whatever the shard count
        self._shard_slots = [key_slot(keys.stats(shard).encode()) for shard in range(keys.shards)]

    def events(self, users: Iterable[str], lists: bool = False) -> None:
        """One unit per event of each user named (a user once per event); ``lists``: one list write each too."""
        per_user: Counter[str] = Counter()
        for user in users:  # not Counter(users): a mapping's values would be taken as counts
            per_user[user] += 1
        self.per_user.update(per_user)
        for user, n in per_user.items():
            self.units[self._shard_slots[self.keys.shard_of(user)]] += n
            if lists:
                self.units[key_slot(self.keys.rec(user).encode())] += n

    def new_items(self, n: int) -> None:
        self.units[key_slot(self.keys.items.encode())] += n

    def figures(self, topology: Topology) -> dict[str, Any]:
        """``max_slot_write_share`` (and which slot), ``max_user_write_share`` (the most one user's events take:
        the least the largest slot can take) and the units' share by the primary owning their slot."""
        total = max(1, sum(self.units.values()))
        slot, most = self.units.most_common(1)[0] if self.units else (0, 0)
        by_primary: Counter[str] = Counter()
        for unit_slot, n in self.units.items():
            by_primary[_owner(topology, unit_slot)] += n
        return {
            "max_slot_write_share": round(most / total, 5),
            "max_slot": slot,
            "max_user_write_share": round(max(self.per_user.values(), default=0) / total, 5),
            "write_units": sum(self.units.values()),
            "slot_primary_share": {name: round(n / total, 4) for name, n in sorted(by_primary.items())},
        }


def _owner(topology: Topology, slot: int) -> str:
    """The primary that owns ``slot`` (the one node of a single Redis)."""
    client = topology.client
    if isinstance(client, redis.RedisCluster):
        slots: Any = client.nodes_manager.slots_cache
        return str(slots[slot][0].name)
    return node_name(client)


def topology_figures(topology: Topology, keys: Keys) -> dict[str, Any]:
    """``shards``, ``primaries``, ``replicas`` (fewest of any primary), ``wait_replicas`` (most of any)."""
    primaries = topology.primaries()
    replicas = []
    for node in primaries:
        info: Any = node.info("replication")
        replicas.append(int(info.get("connected_slaves", 0)))
    return {
        "cluster": topology.cluster,
        "shards": keys.shards,
        "primaries": len(primaries),
        "replicas": min(replicas),
        "wait_replicas": max(topology.wait_count(node) for node in primaries),
    }


def compare(reader: StateReader, expected: Expected) -> dict[str, Any]:
    """Redis against the reference model: every user's history and the popularity merged over shards."""
    users = sorted(expected.histories)
    got: dict[str, set[tuple[int, int, str]]] = {}
    for start in range(0, len(users), 5000):
        chunk = reader.histories_by_item_id(users[start : start + 5000])
        got.update({u: {(e.ts, e.crc, i) for i, e in h} for u, h in chunk.items()})
    missing = sum(len(set(h) - got.get(u, set())) for u, h in expected.histories.items())
    extra = sum(len(got.get(u, set()) - set(h)) for u, h in expected.histories.items())
    applied = reader.totals()["applied"]
    pop = dict(reader.popularity())
    pop_ok = set(pop) == set(expected.popularity) and all(
        abs(pop[k] - v) < 1e-6 for k, v in expected.popularity.items()
    )
    return {
        "lost": missing + max(0, expected.applied - applied),
        "duplicated": extra + max(0, applied - expected.applied),
        "popularity_matches": pop_ok,
        "applied": applied,
        "expected_applied": expected.applied,
        "users_checked": len(users),
    }
