"""Training snapshot benchmark: the speed and peak memory of reading every history out of Redis.

    python bench/snapshot.py --users 200000 --history 100 [--redis-cluster 3]

Writes ``--users`` histories of ``--history`` records each (items drawn from ``--items``, numbered by the
real item dictionary: one ingested event per item) straight into Redis under a prefix of its own, then
times ``daemon.train.source.read_snapshot`` - the trainer's read: SCAN on every primary, one MGET per
shard of a chunk, numpy decoding - and measures the process's peak resident memory during that read
(``/proc/self/clear_refs`` resets the peak first). Uses RECD_REDIS_URL (default local; a redis-server is
started when none answers), or a local Redis Cluster with ``--redis-cluster N``. Last line: JSON with
records, users, seconds, records_per_s, peak_rss_mib (above the process's size before the read) and
peak_bytes_per_record. Every key written is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import add_cluster_args, redis_target
from bench.common import drop_prefix, python_loop_seconds
from daemon.dev.embedded import LocalProcess, redis_answers, start_redis
from daemon.ingest.store import RedisStore
from daemon.runtime.history import RECORD, TYPE_CODES, weight_table
from daemon.runtime.keys import Keys
from daemon.runtime.options import keys_of, store_options, topology_of
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings, load_settings
from daemon.train.source import read_snapshot
from schemas.events import InteractionEvent

CHUNK_USERS = 5_000  # histories written per pipeline


def number_items(settings: Settings, topology: Topology, items: int, ts_ms: int) -> np.ndarray:
    """The dictionary number of item ``k`` for every k (assigned by ingesting one event per item)."""
    store = RedisStore(topology, keys_of(settings), store_options(settings))
    ids = [f"i{k}" for k in range(items)]
    for start in range(0, items, 10_000):
        part = ids[start : start + 10_000]
        events = [(InteractionEvent(f"seed-{i}", "seed-user", i, "view", ts_ms), ts_ms) for i in part]
        store.apply_events(events, ts_ms)
    known = store.item_numbers.numbers
    return np.asarray([known[i] for i in ids], np.uint32)


def write_histories(topology: Topology, keys: Keys, args: argparse.Namespace, numbers: np.ndarray) -> int:
    """Write every user's packed history (sorted by second); returns the records written."""
    rng = np.random.default_rng(1)
    click = TYPE_CODES["click"]
    for start in range(0, args.users, CHUNK_USERS):
        n = min(CHUNK_USERS, args.users - start)
        recs = np.zeros((n, args.history), RECORD)
        recs["ts"] = 1_700_000_000 + np.sort(rng.integers(0, 10_000_000, (n, args.history)), axis=1)
        recs["crc_hi"] = rng.integers(0, 1 << 16, (n, args.history))
        recs["item"] = numbers[rng.integers(0, len(numbers), (n, args.history))]
        recs["code"] = click
        pipe = topology.client.pipeline(transaction=False)
        for row in range(n):
            pipe.set(keys.history(f"u{start + row}"), recs[row].tobytes())
        pipe.execute()
    return int(args.users * args.history)


def measure_read(settings: Settings, topology: Topology) -> tuple[int, float, float]:
    """(records read, seconds, peak RSS MiB above the size before the read)."""
    weights = weight_table(settings.event_weights, settings.rating_threshold)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current size
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    snap = read_snapshot(topology, keys_of(settings), weights)
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    return len(snap.data.users), seconds, (peak - before) / 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--history", type=int, default=100, help="records per user")
    parser.add_argument("--items", type=int, default=50_000)
    add_cluster_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    loop_before = python_loop_seconds()
    servers: list[LocalProcess] = []
    url = os.environ.get("RECD_REDIS_URL", "redis://127.0.0.1:6379/0")
    target = redis_target(args, url)
    if not target.cluster and not redis_answers(url):
        servers.append(start_redis())
        target.url = servers[-1].address
    settings = load_settings(**target.settings(), redis_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    topology = topology_of(settings)
    try:
        numbers = number_items(settings, topology, args.items, int(time.time() * 1000))
        written = write_histories(topology, keys_of(settings), args, numbers)
        records, seconds, peak_mib = measure_read(settings, topology)
        drop_prefix(topology.client, settings.redis_prefix)
    finally:
        for server in servers:
            server.stop()
        target.stop()
    result = {
        "users": args.users,
        "history": args.history,
        "records_written": written,
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "peak_bytes_per_record": round(peak_mib * 2**20 / max(records, 1), 1),
        "shards": settings.redis_shards,
        "primaries": len(topology.primaries()),
        "python_loop_s": [loop_before, python_loop_seconds()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
