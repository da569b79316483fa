"""Fuzzing benchmark: generated malformed, adversarial and valid events and profiles through the real ingest
loop, broker and Redis; every bad message must reach its dead-letter topic with the expected reason,
every good one must be applied as the reference model says, and the loop's memory must stay flat.

    python bench/fuzz.py --count 100000 [--seed 1]

Uses RECD_KAFKA_BOOTSTRAP / RECD_REDIS_URL when set, else starts the embedded broker (and a local
redis-server if none answers). The cases come from tests/fuzzcases.py (tests/test_fuzz.py runs a bounded
number in CI). The last line printed is one JSON object: count, bad, good, dlq, applied, crashes,
rss_growth_mb, seconds, ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, isolated_settings
from bench.groundtruth import replay
from daemon.dev.embedded import LocalProcess, redis_answers, start_broker, start_redis
from daemon.dev.publish import make_producer
from daemon.ingest.deadletters import DETAIL, REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from daemon.runtime.app import build_ingest, create_topics
from daemon.runtime.metrics import Metrics
from daemon.runtime.options import keys_of, limits, topology_of
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from schemas.events import REASONS, InteractionEvent, ProfileEvent
from tests.fuzzcases import EVENTS, Case, Fuzzer

Coords = tuple[str, int, int]  # topic, partition, offset


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_cases(settings: Settings, count: int, seed: int) -> list[Case]:
    return list(Fuzzer(seed, limits(settings), int(time.time() * 1000)).cases(count))


def produce(settings: Settings, cases: Sequence[Case]) -> list[Coords]:
    """Publish every case to its topic (good ones keyed by user, so a user's events keep their order);
    returns each one's (topic, partition, offset)."""
    create_topics(settings)
    producer = make_producer(settings)
    try:
        topics = {EVENTS: settings.events_topic}
        futures = [producer.send(topics.get(c.kind, settings.profiles_topic), key=c.key, value=c.raw) for c in cases]
        producer.flush()
        metas = [f.get(timeout=60) for f in futures]
        return [(m.topic, m.partition, m.offset) for m in metas]
    finally:
        producer.close()


@dataclass
class Run:
    """What the ingest loop did with the published cases."""

    seconds: float = 0.0
    crashes: list[str] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)  # after each tenth of the messages was polled
    polled: int = 0

    @property
    def rss_growth(self) -> int:
        """Growth from the first tenth (caches and buffers warm) to the end."""
        return self.rss_samples[-1] - self.rss_samples[0] if len(self.rss_samples) > 1 else 0


def ingest(settings: Settings, total: int, timeout_s: float) -> tuple[Run, Metrics]:
    """Run the ingest loop until it polled ``total`` messages and went idle (or a crash, or the timeout)."""
    metrics = Metrics(CollectorRegistry())
    worker = build_ingest(settings, metrics)
    run = Run()
    started = time.monotonic()
    mark = total // 10 or 1
    try:
        while time.monotonic() - started < timeout_s:
            try:
                run.polled += worker.step()
            except Exception as exc:  # a crash: the loop would stop here in the daemon
                run.crashes.append(f"{type(exc).__name__}: {exc}"[:300])
                break
            while run.polled >= mark * (len(run.rss_samples) + 1) and len(run.rss_samples) < 10:
                run.rss_samples.append(rss_bytes())
            if run.polled >= total and worker.idle():
                break
    finally:
        run.seconds = time.monotonic() - started
        worker.shutdown()
    return run, metrics


def dead_letters(settings: Settings, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record of both dead-letter topics (at least ``expect``, within the timeout)."""
    topics = [settings.dlq_topic, settings.profiles_topic + settings.dlq_suffix]
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    idle_until = 0.0
    try:
        while time.monotonic() < deadline and (len(out) < expect or time.monotonic() < idle_until):
            got = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            out.extend(got)
            if len(out) >= expect and not idle_until:
                idle_until = time.monotonic() + 1.0  # a moment more: extra letters would be a fault
    finally:
        consumer.close()
    return out


def check_dead_letters(cases: Sequence[Case], coords: Sequence[Coords], letters: Sequence[Any]) -> list[str]:
    """Faults: a bad case without exactly one letter, a letter for a good case, a reason not expected."""
    by_coords = dict(zip(coords, cases, strict=True))
    faults: list[str] = []
    seen: Counter[Coords] = Counter()
    for letter in letters:
        headers = {k: v for k, v in letter.headers}
        where = (headers[SOURCE_TOPIC].decode(), int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET]))
        seen[where] += 1
        case = by_coords.get(where)
        reason = headers[REASON].decode()
        if case is None or case.good:
            faults.append(f"dead letter for a good or unknown message at {where}: {reason}")
        elif reason not in case.reasons or not headers.get(DETAIL):
            faults.append(f"{case.label} at {where}: reason {reason!r}, expected one of {sorted(case.reasons)}")
    for where, case in by_coords.items():
        if not case.good and seen[where] != 1:
            faults.append(f"{case.label} at {where}: {seen[where]} dead letters")
    return faults


def _event_doc(ev: InteractionEvent) -> dict[str, Any]:
    doc: dict[str, Any] = {k: v for k, v in ev._asdict().items() if k != "context"}
    if ev.value is None:
        del doc["value"]
    return doc


def check_events(settings: Settings, reader: StateReader, cases: Sequence[Case]) -> tuple[list[str], int]:
    """Faults of Redis against the reference model of the good events (in publishing order: a user's
    events share a partition); returns them and the applied count."""
    good = [c.record for c in cases if c.good and isinstance(c.record, InteractionEvent)]
    expected = replay(
        [_event_doc(ev) for ev in good], settings.history_len, settings.event_weights, settings.rating_threshold
    )
    faults: list[str] = []
    totals = reader.totals()
    for name in ("applied", "duplicates", "stale"):
        if totals[name] != getattr(expected, name):
            faults.append(f"{name}: Redis {totals[name]}, expected {getattr(expected, name)}")
    users = sorted(expected.histories)
    for user, entries in reader.histories_by_item_id(users).items():
        got = [(e.ts, e.crc, name) for name, e in entries]
        if got != expected.histories[user]:
            faults.append(f"history of {user!r}: {got[:3]}..., expected {expected.histories[user][:3]}...")
    want = {item: score for item, score in expected.popularity.items() if score > 0}
    have = dict(reader.popularity())
    if set(have) != set(want) or any(abs(have[i] - want[i]) > 1e-6 * max(1.0, want[i]) for i in want):
        faults.append(f"popularity differs: {len(have)} items in Redis, {len(want)} expected")
    return faults, int(totals["applied"])


def check_profiles(reader: StateReader, cases: Sequence[Case]) -> tuple[list[str], int]:
    """Faults of the stored profiles against the newest good profile of each user; returns them and how
    many profiles were applied (newer than every earlier one of the user)."""
    newest: dict[str, ProfileEvent] = {}
    applied = 0
    for case in cases:
        prof = case.record
        if not (case.good and isinstance(prof, ProfileEvent)):
            continue
        if prof.user_id not in newest or prof.ts > newest[prof.user_id].ts:
            newest[prof.user_id] = prof
            applied += 1
    faults: list[str] = []
    for user, stored in reader.profiles(sorted(newest)).items():
        want = newest[user]
        if stored is None or (stored.attributes, stored.ts) != (want.attributes, want.ts):
            faults.append(f"profile of {user!r}: {stored}, expected {want}")
    if reader.totals()["profiles"] != applied:
        faults.append(f"profiles applied: Redis {reader.totals()['profiles']}, expected {applied}")
    return faults, applied


@dataclass
class Report:
    figures: dict[str, Any]
    faults: list[str]


def fuzz(settings: Settings, cases: Sequence[Case], timeout_s: float) -> Report:
    """Publish, ingest and check ``cases``; the figures and every fault found."""
    coords = produce(settings, cases)
    run, metrics = ingest(settings, len(cases), timeout_s)
    bad = sum(not c.good for c in cases)
    letters = dead_letters(settings, bad)
    faults = [f"crash: {c}" for c in run.crashes]
    faults += check_dead_letters(cases, coords, letters)
    reader = StateReader(topology_of(settings), keys_of(settings))
    event_faults, applied = check_events(settings, reader, cases)
    profile_faults, profiles = check_profiles(reader, cases)
    invalid = sum(metrics.registry.get_sample_value("recd_events_invalid_total", {"reason": r}) or 0 for r in REASONS)
    figures = {
        "count": len(cases),
        "bad": bad,
        "good": len(cases) - bad,
        "dlq": len(letters),
        "invalid_metric": int(invalid),
        "applied": applied,
        "profiles_applied": profiles,
        "crashes": len(run.crashes),
        "faults": len(faults) + len(event_faults) + len(profile_faults),
        "rss_growth_mb": round(run.rss_growth / 2**20, 1),
        "rss_end_mb": round(run.rss_samples[-1] / 2**20, 1) if run.rss_samples else None,
        "ingest_seconds": round(run.seconds, 1),
        "messages_per_s": round(len(cases) / run.seconds) if run.seconds else None,
    }
    return Report(figures, faults + event_faults + profile_faults)


def settings_for(bootstrap: str, redis_url: str, **extra: Any) -> Settings:
    """Settings for one run, apart from the environment's RECD_* variables."""
    return isolated_settings(bootstrap, "fuzz", environ={}, redis_url=redis_url, **extra)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="messages to generate (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-len", type=int, default=8, help="short histories: old events turn stale")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up ingesting after this many seconds")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    servers: list[LocalProcess] = []
    bootstrap = os.environ.get("RECD_KAFKA_BOOTSTRAP")
    if not bootstrap:
        servers.append(start_broker())
        bootstrap = servers[-1].address
    url = os.environ.get("RECD_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_answers(url):
        servers.append(start_redis())
        url = servers[-1].address
    settings = settings_for(bootstrap, url, history_len=args.history_len)
    try:
        started = time.monotonic()
        cases = make_cases(settings, args.count, args.seed)
        report = fuzz(settings, cases, args.timeout)
        drop_prefix(topology_of(settings).client, settings.redis_prefix)
    finally:
        for server in servers:
            server.stop()
    for fault in report.faults[:20]:
        print("FAULT", fault, file=sys.stderr)
    print(json.dumps({**report.figures, "seed": args.seed, "seconds": round(time.monotonic() - started, 1)}))
    sys.exit(1 if report.faults else 0)


if __name__ == "__main__":
    main()
