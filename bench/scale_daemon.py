"""The scale benchmark's daemon phase: the real ``recd train`` and ``recd run --roles serve`` on the loaded state.

Time to first recommendation is what a team sees on an empty Redis: the events ingested (the load), one
training run of the train role (``recd train``: snapshot, hold-out split, fit of the default preset, quality
gate, publish), then a serve process that loads the published model, builds its indexes and rewrites every
changed user's list; the first list carrying the new model's version ends it. The same serve process then
gives the serving figures: every active user is marked changed at once and the queue drained, timing the
wall clock and the process's CPU (users/s, µs of CPU per user) and reading its resident memory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from bench.common import process_cpu_seconds
from bench.scale_stages import Figures, status_bytes
from daemon.dev.embedded import daemon_env
from daemon.runtime.keys import Keys
from daemon.runtime.options import keys_of, topology_of
from daemon.runtime.redisconn import Topology
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader, each_shard
from daemon.train.publish import read_pointer

log = logging.getLogger(__name__)

WATCHED_USERS = 2_000  # users whose lists are polled for the first model list
POLL_S = 0.05
SERVE_TIMEOUT_S = 3_600.0


@dataclass(frozen=True)
class DaemonRun:
    """What the daemon phase needs: the run's settings, the device to train on and the users' count."""

    settings: Settings
    device: str
    users: int
    seed: int
    extra: tuple[tuple[str, Any], ...] = ()  # more settings (name, value) the daemons take from RECD_*

    def env(self) -> dict[str, str]:
        more = {f"RECD_{name.upper()}": env_value(value) for name, value in self.extra}
        return daemon_env(
            self.settings, RECD_METRICS_PORT="0", RECD_DEVICE=self.device, RECD_TRAIN_MIN_EVENTS="1", **more
        )


def env_value(value: Any) -> str:
    """A setting's value as its RECD_* variable spells it (mappings ``k=v,...``, sequences ``a,b``)."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``command`` to its end: (seconds, its peak RSS in bytes, from wait4's rusage of that one child)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def train_once(run: DaemonRun) -> Figures:
    """``recd train``: one run of the train role, which publishes the first model."""
    log.info("daemon: recd train (the first model)")
    seconds, peak = run_measured([sys.executable, "-m", "daemon", "train"], run.env())
    pointer = read_pointer(topology_of(run.settings).client, keys_of(run.settings))
    if pointer is None:
        raise RuntimeError("recd train published no model")
    log.info("daemon: model %s published after %.1f s", pointer.version, seconds)
    return {"train_once_s": round(seconds, 2), "train_peak_rss_bytes": peak, "model_version": pointer.version}


def versions_of(topology: Topology, keys: Keys, users: list[str]) -> list[str | None]:
    """The model version of each user's list (None: no list yet)."""
    raw = topology.client.mget([keys.rec(u) for u in users])
    return [orjson.loads(r)["model_version"] if r else None for r in raw]


def wait_until(label: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> float:
    """Seconds until ``check()`` holds; fails when ``proc`` exits or the time runs out."""
    started = time.perf_counter()
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"the serve process exited ({proc.returncode}) while waiting for {label}")
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(label)
        time.sleep(POLL_S)
    return time.perf_counter() - started


def first_lists(run: DaemonRun, proc: subprocess.Popen[bytes], version: str) -> Figures:
    """From the serve process's start: its first list of ``version``, then every queued user served."""
    topology, keys = topology_of(run.settings), keys_of(run.settings)
    rng = np.random.default_rng(run.seed)
    watched = [f"u{k}" for k in rng.choice(run.users, min(run.users, WATCHED_USERS), replace=False).tolist()]
    first = wait_until("the first list", lambda: version in versions_of(topology, keys, watched), SERVE_TIMEOUT_S, proc)
    log.info("daemon: first list of model %s %.1f s after the serve process started", version, first)
    reader = StateReader(topology, keys)
    rest = wait_until("every list", lambda: reader.queued() == 0, SERVE_TIMEOUT_S, proc)
    served = versions_of(topology, keys, watched)
    return {
        "serve_first_list_s": round(first, 2),
        "serve_all_lists_s": round(first + rest, 2),
        "watched_users_with_model_list": sum(v == version for v in served) / len(watched),
    }


def mark_all_changed(topology: Topology, keys: Keys) -> int:
    """Every shard's active users into its changed-user queue; returns how many."""
    active = each_shard(topology, keys, lambda p, s: p.zrange(keys.active(s), 0, -1))
    now = int(time.time() * 1000)

    def mark(pipe: Any, shard: int) -> None:
        if active[shard]:
            pipe.zadd(keys.dirty(shard), dict.fromkeys(active[shard], now))
        else:
            pipe.zcard(keys.dirty(shard))

    each_shard(topology, keys, mark)
    return sum(len(users) for users in active)


def serve_rate(run: DaemonRun, proc: subprocess.Popen[bytes]) -> Figures:
    """Every active user changed at once, the queue drained by the serve process: users/s, CPU per user."""
    topology, keys = topology_of(run.settings), keys_of(run.settings)
    reader = StateReader(topology, keys)
    cpu_before = process_cpu_seconds(proc.pid) or 0.0
    users = mark_all_changed(topology, keys)
    log.info("daemon: %d users marked changed", users)
    seconds = wait_until("the queue drained", lambda: reader.queued() == 0, SERVE_TIMEOUT_S, proc)
    cpu = (process_cpu_seconds(proc.pid) or 0.0) - cpu_before
    log.info("daemon: %d users served in %.1f s (%.0f/s)", users, seconds, users / max(seconds, 1e-9))
    return {
        "serve_users": users,
        "serve_s": round(seconds, 2),
        "serve_users_per_s": round(users / max(seconds, 1e-9)),
        "serve_cpu_us_per_user": round(1e6 * cpu / max(1, users), 1),
        "serve_rss_bytes": status_bytes("VmRSS", proc.pid),
        "serve_peak_rss_bytes": status_bytes("VmHWM", proc.pid),
    }


def daemon_phase(run: DaemonRun, load_s: float) -> Figures:
    """Train once, start a serve process, time its first lists, then its serving rate; ``load_s`` is the
    ingest from empty that time to first recommendation adds."""
    figures = train_once(run)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--roles", "serve"], env=run.env())
    try:
        figures |= first_lists(run, proc, figures["model_version"])
        figures |= serve_rate(run, proc)
    finally:
        proc.terminate()
        proc.wait(60)
    figures["time_to_first_rec_s"] = round(load_s + figures["train_once_s"] + figures["serve_first_list_s"], 2)
    return figures
