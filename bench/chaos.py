"""Chaos replay: N synthetic events, with duplicates and out-of-order event times, while the daemons are
SIGKILLed and restarted, Redis is restarted and the broker goes away; then Redis must equal the ground truth.

    python bench/chaos.py --events 1000000 --kills 10

Starts a broker (bench-owned, memory-only storage) and a redis-server of its own (append-only file in a
temporary folder), one ``recd run --roles ingest`` and one ``recd run --roles serve`` process. Publishes the
users' profiles (and waits until they are applied, so the reference model can attribute every event to a
segment), then the events in slices: the first slice is ingested and a model is trained once with a one-shot
``recd train``; each later slice is followed by one fault, in a random order:

- ``--kills`` SIGKILLs, half of them of the ingest process and half of the serve process, each at a random
  moment while that slice is being worked on; the process is started again at once;
- one Redis restart: SHUTDOWN (which writes the append-only file out), then redis-server again on the same
  port and folder; it comes back with its data (``redis_keys_before_restart`` / ``_after``);
- one broker outage (``broker_outages``): the broker is paused with SIGSTOP for ``--broker-pause-s`` seconds,
  then SIGCONT. The dev broker keeps its data in memory only, so it is paused rather than restarted.

The stream: events shuffled within windows of ``--shuffle-window`` (so a user's event times go backwards,
``out_of_order``), and ``--duplicates`` of them sent a second time up to 20,000 messages later. Messages are
keyed by user, so each user's events reach one partition in send order; the reference model
(bench/groundtruth.py) takes them in that order. Then the bench waits until every offset is committed and the
changed-user queues are empty, and checks Redis: every user's history, item popularity, segment counts and
the applied total against the model (``lost``, ``doubled``, ``*_match``), and that every user with events has
a ``rec:`` list made by the current model (``users_without_list``). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_parts import (
    ROOT,
    AofRedis,
    Daemons,
    Sender,
    Stream,
    committed_total,
    daemon_env,
    handled,
    lists_check,
    make_stream,
    pause,
    verify,
    wait_until,
)
from bench.common import isolated_settings, python_loop_seconds
from daemon.dev.embedded import LocalProcess, start_broker
from daemon.dev.synthetic import SyntheticSpec, synthetic_profiles
from daemon.runtime.app import create_topics
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from daemon.train.publish import read_pointer


@dataclass(frozen=True)
class ChaosConfig:
    """What one chaos replay does (the command line's options)."""

    events: int = 1_000_000
    kills: int = 10
    users: int = 20_000
    items: int = 5_000
    seed: int = 1
    duplicates: float = 0.03  # share of events sent twice
    shuffle_window: int = 500  # events are shuffled within windows of this many
    broker_pause_s: float = 10.0
    shards: int = 256  # RECD_REDIS_SHARDS
    drain_timeout_s: float = 1800.0  # the most the end waits for offsets, queues and lists


@dataclass
class Run:
    """The processes and clients of one replay, and the faults done so far."""

    config: ChaosConfig
    settings: Settings
    broker: LocalProcess
    redis: AofRedis
    daemons: Daemons
    reader: StateReader
    sender: Sender
    rng: random.Random
    faults: dict[str, Any]


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    d = ChaosConfig()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--events", type=int, default=d.events, help="synthetic events (before duplicates)")
    ap.add_argument("--kills", type=int, default=d.kills, help="SIGKILLs, split between ingest and serve")
    ap.add_argument("--users", type=int, default=d.users)
    ap.add_argument("--items", type=int, default=d.items)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--duplicates", type=float, default=d.duplicates, help="share of events sent twice")
    ap.add_argument("--shuffle-window", type=int, default=d.shuffle_window)
    ap.add_argument("--broker-pause-s", type=float, default=d.broker_pause_s)
    ap.add_argument("--shards", type=int, default=d.shards, help="RECD_REDIS_SHARDS")
    ap.add_argument("--drain-timeout-s", type=float, default=d.drain_timeout_s)
    a = ap.parse_args(argv)
    return ChaosConfig(
        events=a.events,
        kills=a.kills,
        users=a.users,
        items=a.items,
        seed=a.seed,
        duplicates=a.duplicates,
        shuffle_window=a.shuffle_window,
        broker_pause_s=a.broker_pause_s,
        shards=a.shards,
        drain_timeout_s=a.drain_timeout_s,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    loop_before = python_loop_seconds()
    folder = ROOT / "var" / f"bench-chaos-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        result = run_chaos(config, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # logs, the append-only file, model snapshots
    print(json.dumps({**result, "python_loop_s": [loop_before, python_loop_seconds()]}), flush=True)


def run_chaos(config: ChaosConfig, folder: Path) -> dict[str, Any]:
    """The whole replay in ``folder`` (logs, Redis' files, models): start the broker and Redis, replay with
    faults, stop them; returns the figures (the JSON line less ``python_loop_s``)."""
    started = time.monotonic()
    broker = start_broker(folder)
    try:
        server = AofRedis(folder / "redis")
        try:
            settings = chaos_settings(config, broker.address, server.url, folder)
            figures = replay_with_faults(config, settings, broker, server, folder)
        finally:
            server.stop()
    finally:
        broker.stop()
    return {**figures, "seconds": round(time.monotonic() - started, 1)}


def chaos_settings(config: ChaosConfig, bootstrap: str, redis_url: str, folder: Path) -> Settings:
    return isolated_settings(
        bootstrap,
        "chaos",
        environ={},
        redis_url=redis_url,
        redis_shards=config.shards,
        model_dir=str(folder / "models"),
    )


def replay_with_faults(
    config: ChaosConfig, settings: Settings, broker: LocalProcess, server: AofRedis, folder: Path
) -> dict[str, Any]:
    """Profiles, the first slice and a model, then a fault after each later slice; the end settled, Redis
    checked against the reference model."""
    rng, now = random.Random(config.seed), int(time.time() * 1000)
    spec = SyntheticSpec(
        users=config.users, items=config.items, seed=config.seed, start_ms=now - config.events * 5 - 60_000, step_ms=5
    )
    stream = make_stream(spec, config.events, rng, config.duplicates, config.shuffle_window)
    profiles = list(synthetic_profiles(spec, now - 7_200_000 - config.events * 5))
    create_topics(settings)
    reader = StateReader(topology_of(settings), keys_of(settings), settings.segment_keys)
    daemons = Daemons(daemon_env(settings), folder)
    faults: dict[str, Any] = {"redis_restarts": 0, "broker_outages": 0}
    run = Run(config, settings, broker, server, daemons, reader, Sender(settings.kafka_bootstrap), rng, faults)
    try:
        order = plan(config.kills, rng)
        slices = split(stream.events, len(order) + 2)
        version = start(run, profiles, slices[0])
        for fault, part in zip(order, slices[1:-1], strict=True):
            before = handled(reader)
            run.sender.send(settings.events_topic, part)
            do_fault(run, fault, before)
        run.sender.send(settings.events_topic, slices[-1])
        settle(run, len(stream.events))
    except BaseException:
        print(daemons.log_tail(), file=sys.stderr)
        raise
    finally:
        daemons.stop()
    return figures(run, stream, profiles, version)


def plan(kills: int, rng: random.Random) -> list[str]:
    """The faults in a random order: ``kills`` kills (ingest gets the odd one), a Redis restart, a broker outage."""
    faults = ["ingest"] * (kills - kills // 2) + ["serve"] * (kills // 2) + ["redis", "broker"]
    rng.shuffle(faults)
    return faults


def split(events: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    size = -(-len(events) // parts)
    return [events[k * size : (k + 1) * size] for k in range(parts)]


def start(run: Run, profiles: list[dict[str, Any]], first: list[dict[str, Any]]) -> str:
    """Profiles applied, then the first slice ingested, then one model trained and published: its version."""
    return prime(run.settings, run.reader, run.sender, profiles, first)


def prime(
    settings: Settings, reader: StateReader, sender: Sender, profiles: list[dict[str, Any]], first: list[dict[str, Any]]
) -> str:
    """Send the profiles and wait until they are applied, then ``first`` until it is ingested, then train and
    publish one model with a one-shot ``recd train`` (the daemons must be running); the model's version."""
    sender.send(settings.profiles_topic, profiles)
    wait_until(lambda: reader.totals()["profiles"] >= len(profiles), 300, "profiles applied", 0.2)
    sender.send(settings.events_topic, first)
    wait_until(lambda: handled(reader) >= len(first), 600, "the first slice ingested", 0.2)
    env = daemon_env(settings)
    trained = subprocess.run(
        [sys.executable, "-m", "daemon", "train"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if trained.returncode != 0:
        raise RuntimeError(f"recd train failed: {trained.stdout[-2000:]}{trained.stderr[-2000:]}")
    pointer = read_pointer(reader.client, reader.keys)
    if pointer is None:
        raise RuntimeError(f"recd train published no model: {trained.stdout[-2000:]}")
    return pointer.version


def do_fault(run: Run, fault: str, before: int) -> None:
    """One fault at a random moment while the slice just sent is being worked on (ingest and Redis: once
    ingest has handled more than ``before`` events)."""
    run.daemons.revive()
    if fault in ("ingest", "redis"):
        wait_until(lambda: handled(run.reader) > before, 120, "ingest making progress", 0.05)
        time.sleep(run.rng.uniform(0.0, 0.5))
    elif fault == "serve":
        time.sleep(run.rng.uniform(0.5, 3.0))
    if fault in ("ingest", "serve"):
        run.daemons.kill(fault)
    elif fault == "redis":
        before, after, down_s = run.redis.restart()
        run.faults.update(redis_keys_before_restart=before, redis_keys_after_restart=after, redis_down_s=down_s)
        run.faults["redis_restarts"] += 1
    else:
        run.faults["broker_outage_s"] = pause(run.broker.proc.pid, run.config.broker_pause_s)
        run.faults["broker_outages"] += 1


def settle(run: Run, messages: int) -> None:
    """Every message delivered, every offset committed, the changed-user queues empty (twice in a row)."""
    settings, reader, timeout_s = run.settings, run.reader, run.config.drain_timeout_s
    if run.sender.flush(timeout_s) or run.sender.failed:
        raise RuntimeError(f"{run.sender.failed} messages failed to send")

    def committed() -> bool:
        run.daemons.revive()
        return committed_total(settings) >= messages

    run.faults["committed_wait_s"] = round(wait_until(committed, timeout_s, "every offset committed", 1.0), 1)

    def empty() -> bool:
        if reader.queued():
            return False
        time.sleep(0.5)
        return reader.queued() == 0

    run.faults["drain_wait_s"] = round(wait_until(empty, timeout_s, "the changed-user queues empty", 0.5), 1)
    run.faults["committed"] = committed_total(settings)


def figures(run: Run, stream: Stream, profiles: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """The JSON line's figures: the stream, the faults, and Redis against the reference model."""
    truth = verify(run.settings, run.reader, profiles, stream.events)
    users = sorted({e["user_id"] for e in stream.events})
    lists = lists_check(run.reader.client, run.reader.keys.rec, users, version)
    kills, exits = run.daemons.kills, run.daemons.exits
    pointer = read_pointer(run.reader.client, run.reader.keys)
    return {
        "events": run.config.events,
        "messages": len(stream.events),
        "duplicates_sent": stream.duplicates,
        "out_of_order": stream.out_of_order,
        "kills": kills.total(),
        "kills_ingest": kills["ingest"],
        "kills_serve": kills["serve"],
        "exits_unprompted": exits.total(),
        "broker_outage_kind": "SIGSTOP/SIGCONT (the dev broker's storage is memory-only)",
        **run.faults,
        **truth,
        **lists,
        "model_version": version,
        "model_unchanged": pointer is not None and pointer.version == version,
        "users_total": run.config.users,
        "shards": run.config.shards,
    }


if __name__ == "__main__":
    main()
