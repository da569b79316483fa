"""Burst benchmark: a steady stream, then ten times the rate for a minute, then steady again; the daemons'
memory, the lag and its recovery, and Redis checked against the reference model.

    python bench/burst.py --rate 2000 --factor 10 --burst-s 60

Starts a broker and a redis-server of its own, one ``recd run --roles ingest`` and one ``recd run --roles
serve`` process with default settings, publishes the users' profiles and ``--warmup`` events, trains one
model, then sends ``--rate`` events/s for ``--steady-s``, ``--factor`` times that for ``--burst-s``, and
``--rate`` again for ``--after-s``. Every 0.5 s it samples each daemon's resident memory (``VmRSS``) and the
lag: events sent minus events ingest has answered for. ``recovery_s`` is the time from the burst's end until
the lag is back under one second of the steady rate. At the end every offset must be committed and the
changed-user queues empty; Redis is checked as in bench/chaos.py (``lost``, ``doubled``, every user's list).
Last line: JSON with the peak and steady RSS of each role (MiB), the peak lag, ``recovery_s`` and the checks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos import prime
from bench.chaos_parts import ROOT, AofRedis, Daemons, Sender, daemon_env, handled, lists_check, verify, wait_until
from bench.common import isolated_settings, python_loop_seconds
from daemon.dev.embedded import start_broker
from daemon.dev.synthetic import SyntheticSpec, synthetic_events, synthetic_profiles
from daemon.runtime.app import create_topics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader

SAMPLE_S = 0.5
TICK_S = 0.05  # the producer sends a tick's share of the rate at a time


@dataclass
class Samples:
    """What the sampler saw: (seconds since the stream began, lag, RSS MiB by role) every SAMPLE_S."""

    rows: list[tuple[float, int, dict[str, float]]] = field(default_factory=list)
    sent: int = 0  # events of the stream sent so far (the producer thread updates it)


def rss_mib(pid: int) -> float:
    """A process's resident memory now (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def sample(daemons: Daemons, reader: StateReader, base: int, samples: Samples, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(SAMPLE_S):
        rss = {role: rss_mib(proc.pid) for role, proc in daemons.procs.items()}
        lag = samples.sent - (handled(reader) - base)
        samples.rows.append((time.monotonic() - started, lag, rss))


def send_phases(
    sender: Sender, topic: str, events: list[dict[str, Any]], phases: list[tuple[float, int]], samples: Samples
) -> None:
    """Send ``events`` in order at each phase's (seconds, rate), a tick's share at a time."""
    for seconds, rate in phases:
        per_tick, started, ticks = max(1, int(rate * TICK_S)), time.monotonic(), int(seconds / TICK_S)
        for tick in range(ticks):
            part = events[samples.sent : samples.sent + per_tick]
            sender.send(topic, part)
            samples.sent += len(part)
            time.sleep(max(0.0, started + (tick + 1) * TICK_S - time.monotonic()))


def recovery(samples: Samples, burst_end_s: float, steady_rate: int) -> float | None:
    """Seconds from the burst's end until the lag is under one second of the steady rate (None: never)."""
    for t, lag, _ in samples.rows:
        if t >= burst_end_s and lag <= steady_rate:
            return round(t - burst_end_s, 1)
    return None


def memory_figures(samples: Samples, steady_end_s: float) -> dict[str, Any]:
    roles = sorted({r for _, _, rss in samples.rows for r in rss})
    steady = [rss for t, _, rss in samples.rows if t <= steady_end_s] or [samples.rows[0][2]]
    return {
        "rss_peak_mib": {r: round(max(rss.get(r, 0.0) for _, _, rss in samples.rows), 1) for r in roles},
        "rss_steady_mib": {r: round(max(rss.get(r, 0.0) for rss in steady), 1) for r in roles},
        "rss_end_mib": {r: round(samples.rows[-1][2].get(r, 0.0), 1) for r in roles},
        "lag_peak": max(lag for _, lag, _ in samples.rows),
    }


@dataclass(frozen=True)
class BurstConfig:
    rate: int
    factor: int
    steady_s: float
    burst_s: float
    after_s: float
    warmup: int
    users: int
    items: int

    def phases(self) -> list[tuple[float, int]]:
        return [(self.steady_s, self.rate), (self.burst_s, self.rate * self.factor), (self.after_s, self.rate)]

    def stream_events(self) -> int:
        return sum(int(s / TICK_S) * max(1, int(r * TICK_S)) for s, r in self.phases())


def run_burst(config: BurstConfig, folder: Path) -> dict[str, Any]:
    broker = start_broker(folder)
    server = AofRedis(folder / "redis")
    try:
        settings = isolated_settings(
            broker.address, "burst", environ={}, redis_url=server.url, model_dir=str(folder / "models")
        )
        return measure(config, settings, folder)
    finally:
        server.stop()
        broker.stop()


def measure(config: BurstConfig, settings: Settings, folder: Path) -> dict[str, Any]:
    now = int(time.time() * 1000)
    total = config.warmup + config.stream_events()
    spec = SyntheticSpec(users=config.users, items=config.items, seed=1, start_ms=now - total * 5 - 60_000, step_ms=5)
    events, profiles = list(synthetic_events(spec, total)), list(synthetic_profiles(spec, spec.start_ms - 1000))
    create_topics(settings)
    reader = StateReader(topology_of(settings), keys_of(settings), settings.segment_keys)
    daemons, sender = Daemons(daemon_env(settings), folder), Sender(settings.kafka_bootstrap)
    try:
        version = prime(settings, reader, sender, profiles, events[: config.warmup])
        samples, stop = Samples(), threading.Event()
        sampler = threading.Thread(target=sample, args=(daemons, reader, config.warmup, samples, stop), daemon=True)
        sampler.start()
        send_phases(sender, settings.events_topic, events[config.warmup :], config.phases(), samples)
        sender.flush()
        wait_until(lambda: handled(reader) >= total, 1800, "every event ingested", 0.5)
        wait_until(lambda: reader.queued() == 0, 600, "the changed-user queues empty", 0.5)
        stop.set()
        sampler.join()
    except BaseException:
        print(daemons.log_tail(), file=sys.stderr)
        raise
    finally:
        daemons.stop()
    burst_end = config.steady_s + config.burst_s
    users = sorted({e["user_id"] for e in events})
    return {
        "rate": config.rate,
        "burst_rate": config.rate * config.factor,
        "burst_s": config.burst_s,
        "events": total,
        **memory_figures(samples, config.steady_s),
        "recovery_s": recovery(samples, burst_end, config.rate),
        "exits_unprompted": daemons.exits.total(),
        **verify(settings, reader, profiles, events),
        **lists_check(reader.client, reader.keys.rec, users, version),
    }


def parse_args() -> BurstConfig:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=2000, help="steady events/s")
    ap.add_argument("--factor", type=int, default=10, help="the burst's rate over the steady one")
    ap.add_argument("--steady-s", type=float, default=20.0)
    ap.add_argument("--burst-s", type=float, default=60.0)
    ap.add_argument("--after-s", type=float, default=60.0)
    ap.add_argument("--warmup", type=int, default=200_000, help="events before the stream (and the model)")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    a = ap.parse_args()
    return BurstConfig(a.rate, a.factor, a.steady_s, a.burst_s, a.after_s, a.warmup, a.users, a.items)


def main() -> None:
    config = parse_args()
    loop_before = python_loop_seconds()
    folder = ROOT / "var" / f"bench-burst-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    started = time.monotonic()
    try:
        result = run_burst(config, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result.update(seconds=round(time.monotonic() - started, 1), python_loop_s=[loop_before, python_loop_seconds()])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
