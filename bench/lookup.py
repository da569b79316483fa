"""HTTP lookup latency under concurrent load: GET /recommendations/{user} and /similar/{item}.

    python bench/lookup.py --users 5000 --clients 16 --seconds 20 [--baseline REV --rounds 2]

Fills Redis (prefix of its own) with stored lists for ``--users`` users plus
similar-item lists, starts the daemon's HTTP server with the lookup routes in a
child process (as ``recd serve`` does), and runs ``--clients`` threads here,
each a keep-alive client issuing requests back to back: 80% stored user lists,
10% unknown users (the cold-start path), 10% similar items. Last line: JSON
with requests/s and latency percentiles per route.

``--baseline REV`` measures the server of git revision REV too, side by side on
the same data: its tree is exported (``git archive``) to a temporary folder and
its own ``bench/lookup.py`` serves there; the two servers take turns for
``--rounds`` rounds and the JSON has a ``baseline`` and a ``current`` section.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from bench.common import drop_prefix, python_loop_seconds
from daemon.api.http import Routes, start_http
from daemon.runtime.app import build_lookup
from daemon.runtime.keys import Keys
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.redisconn import RedisClient
from daemon.runtime.settings import load_settings
from schemas.records import RecommendationList, SimilarList


def fill(client: RedisClient, keys: Keys, users: int, items: int) -> None:
    """Stored lists for ``users`` users and ``items`` items, and trending counts spread over the shards (item i
    in shard i mod shards)."""
    now = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for u in range(users):
        picks = [f"i{(u * 7 + k * 13) % items}" for k in range(10)]
        pipe.set(
            keys.rec(f"u{u}"),
            RecommendationList(f"u{u}", picks, [1.0 - k / 10 for k in range(10)], "ann", "bench", now).to_json(),
        )
    for i in range(items):
        picks = [f"i{(i + k + 1) % items}" for k in range(10)]
        pipe.set(keys.sim(f"i{i}"), SimilarList(f"i{i}", picks, [0.9] * 10, "bench", now).to_json())
    for i in range(items):
        pipe.zadd(keys.trending(i % keys.shards), {f"i{i}": float(items - i)})
    pipe.execute()


def client_loop(
    port: int, users: int, items: int, stop: threading.Event, out: dict[str, list[float]], errors: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while not stop.is_set():
        r = rng.random()
        if r < 0.8:
            route, path = "recommendations", f"/recommendations/u{rng.randrange(users)}"
        elif r < 0.9:
            route, path = "cold", f"/recommendations/new-{rng.randrange(10**9)}"
        else:
            route, path = "similar", f"/similar/i{rng.randrange(items)}"
        started = time.perf_counter()
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        out[route].append(time.perf_counter() - started)
        if reply.status != 200:
            errors.append(reply.status)
    conn.close()


def serve_forever(prefix: str) -> None:
    """Child process: the daemon's HTTP server with the lookup routes; prints its port."""
    settings = load_settings(redis_prefix=prefix)
    routes = Routes(Metrics(CollectorRegistry()))
    build_lookup(settings, lambda: None).add_routes(routes)
    server = start_http(routes, "127.0.0.1", 0)
    print(server.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


def parse_args() -> argparse.Namespace:
    """The command line (``--serve-prefix``, hidden, makes this process the server child)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--baseline", default="", help="git revision whose server is measured beside this tree's")
    ap.add_argument("--rounds", type=int, default=2, help="turns each server takes with --baseline")
    ap.add_argument("--serve-prefix", help=argparse.SUPPRESS)
    return ap.parse_args()


def measure(script: Path, prefix: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[int]]:
    """Start ``script``'s server child (in its tree) on ``prefix``, load it, stop it."""
    child = subprocess.Popen(
        [sys.executable, str(script), "--serve-prefix", prefix],
        cwd=script.parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(child.stdout.readline()) if child.stdout else 0
        return load(port, args)
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(10)


def export_tree(rev: str, into: Path) -> Path:
    """The tree of git revision ``rev`` under ``into``; its bench/lookup.py."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "bench" / "lookup.py"


def compare(prefix: str, args: argparse.Namespace, loop_before: float) -> dict[str, Any]:
    """The baseline's server and this tree's, taking turns for ``args.rounds`` rounds."""
    runs: dict[str, tuple[dict[str, list[float]], list[int]]] = {}
    with tempfile.TemporaryDirectory(prefix="recd-baseline-") as folder:
        scripts = {"baseline": export_tree(args.baseline, Path(folder)), "current": Path(__file__).resolve()}
        for _ in range(args.rounds):
            for name, script in scripts.items():
                lat, errors = measure(script, prefix, args)
                merged = runs.setdefault(name, ({route: [] for route in lat}, []))
                for route, values in lat.items():
                    merged[0][route].extend(values)
                merged[1].extend(errors)
    seconds = args.seconds * args.rounds
    report = {name: summary(lat, errors, seconds) for name, (lat, errors) in runs.items()}
    head = {"baseline_rev": args.baseline, "rounds": args.rounds, "clients": args.clients}
    return {**head, **report, **loop(loop_before)}


def loop(before: float) -> dict[str, Any]:
    return {"python_loop_s": [before, python_loop_seconds()]}


def main() -> None:
    args = parse_args()
    if args.serve_prefix:
        serve_forever(args.serve_prefix)
        return
    loop_before = python_loop_seconds()
    settings = load_settings(redis_prefix=f"bench-lookup-{uuid.uuid4().hex[:8]}:")
    client = topology_of(settings).client
    fill(client, keys_of(settings), args.users, args.items)
    try:
        if args.baseline:
            report = compare(settings.redis_prefix, args, loop_before)
        else:
            lat, errors = measure(Path(__file__).resolve(), settings.redis_prefix, args)
            report = {"clients": args.clients, "seconds": args.seconds, **summary(lat, errors, args.seconds)}
            report.update(loop(loop_before))
    finally:
        drop_prefix(client, settings.redis_prefix)
    print(json.dumps(report))


def summary(lat: dict[str, list[float]], errors: list[int], seconds: float) -> dict[str, Any]:
    """Requests/s, errors, and each route's and all requests' latency percentiles."""
    total = sum(len(v) for v in lat.values())
    report: dict[str, Any] = {"requests_per_s": round(total / seconds), "errors": len(errors)}
    lat = {**lat, "all": [x for values in lat.values() for x in values]}
    for route, values in lat.items():
        ms = np.asarray(values) * 1000
        report[route] = {"n": len(ms), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}}
    return report


def load(port: int, args: argparse.Namespace) -> tuple[dict[str, list[float]], list[int]]:
    lat: dict[str, list[float]] = {"recommendations": [], "cold": [], "similar": []}
    errors: list[int] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(port, args.users, args.items, stop, lat, errors, k))
        for k in range(args.clients)
    ]
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    return lat, errors


if __name__ == "__main__":
    main()
