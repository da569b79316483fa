"""Unavailable-item sweep benchmark: how fast serving finds the stored lists that hold unavailable items.

    python bench/sweep.py --lists 200000 --holding 2000

Writes ``--lists`` recommendation lists (10 items each) under a prefix of its own on RECD_REDIS_URL (default
local), ``--holding`` of them holding the item made unavailable, then runs ``daemon.serve.sweep.ListSweep``
page by page, as serving does, until the sweep ends. Last line: JSON with lists, seconds, lists_per_s,
users_found (must equal ``--holding``) and python_loop_s. Every key written is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, python_loop_seconds
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import load_settings
from daemon.serve.sweep import ListSweep
from schemas.records import RecommendationList

GONE = "i-gone"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists", type=int, default=200_000)
    parser.add_argument("--holding", type=int, default=2_000)
    args = parser.parse_args()
    settings = load_settings(redis_prefix=f"bench-sweep-{uuid.uuid4().hex[:8]}:")
    topology, keys = topology_of(settings), keys_of(settings)
    now = int(time.time() * 1000)
    try:
        pipe = topology.client.pipeline(transaction=False)
        for n in range(args.lists):
            items = [f"i{(n * 7 + k) % 5000}" for k in range(10)]
            if n < args.holding:
                items[n % 10] = GONE
            pipe.set(keys.rec(f"u{n}"), RecommendationList(f"u{n}", items, [1.0] * 10, "ann", "v", now).to_json())
            if n % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
        found: list[str] = []
        sweep = ListSweep(topology, keys, found.extend)
        loop_s = python_loop_seconds()
        started = time.perf_counter()
        sweep.start({GONE})
        while sweep.running:
            sweep.step()
        seconds = time.perf_counter() - started
    finally:
        drop_prefix(topology.client, settings.redis_prefix)
    figures = {
        "lists": args.lists,
        "seconds": round(seconds, 2),
        "lists_per_s": round(args.lists / seconds),
        "users_found": len(set(found)),
        "python_loop_s": round(loop_s, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
