"""Scale benchmark: a Lit2Vec2-shaped catalogue through ingest, snapshot, training, index and serving.

    python bench/scale.py --users 300000 --items 280000 --positives 9000000 [--device cuda] [--seed 0]

The defaults are one tenth of Lit2Vec2 (seed write-up 000: ~3M users, 2.8M books). In order, each stage
timed and logged with its progress:

1. **load**: ``--positives`` positive events of a synthetic world (bench/scale_load.py: clustered tastes, Zipf
   popularity with a long tail, Pareto user activity, as ``recd produce``) and every user's profile, into an
   empty Redis prefix through the ingest store's scripts, as the ingest role applies them (Kafka aside);
2. **snapshot**: the trainer's read of every history (``daemon.train.source.read_snapshot``) in a child
   process: seconds, records/s, peak RSS;
3. **daemon** (bench/scale_daemon.py): ``recd train`` publishes the first model, ``recd run --roles serve``
   builds its indexes and writes the lists: time to first recommendation = load + train + the serve process's
   first list of that model; then every active user is marked changed and the serve process drains the queue
   (users/s, µs of CPU per user, its RSS);
4. **fit**: a full fit of the default preset (``RECD_MODEL_KIND``, with ``RECD_MODEL_PARAMS``) and one of
   ``item2vec`` on the whole snapshot, each in a child process: seconds, per epoch, samples (pairs)/s, peak RSS
   (and peak GPU memory with ``--device cuda``);
5. **index**: the published model's serving indexes built as a serving process builds them (the kind
   ``daemon/serve/index.py`` picks at this size): seconds, bytes, recall@10 against exact search of
   ``--sample`` users' query vectors (made from their stored histories as serving makes them), QPS of single
   queries on one thread;
6. **warm start**: 1% new items and 5% more events through ingest, then a warm-start fine-tune from the
   published model on the new snapshot: seconds, and whether every old item kept its row.

Uses RECD_REDIS_URL (default local) under a prefix of its own, deleted at the end with the model folder.
``peak_rss_bytes`` is the largest of any process: this one (the loader), each stage's child, ``recd train``
and the serve process. Last line: JSON (see ``report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_prefix, python_loop_seconds
from bench.scale_daemon import DaemonRun, daemon_phase
from bench.scale_load import World, load_growth, load_initial
from bench.scale_stages import Figures, fit_stage, in_child, index_stage, snapshot_stage, status_bytes, warm_stage
from daemon.runtime.options import topology_of
from daemon.runtime.settings import load_settings

log = logging.getLogger("bench.scale")

SAMPLE_USERS = 1_000  # users whose query vectors measure the index's recall
GROWTH_EVENTS = 0.05  # the warm start's new events, a share of --positives
GROWTH_ITEMS = 0.01  # ... and its new items, a share of --items


@dataclass(frozen=True)
class ScaleConfig:
    """One run's sizes and machine choices."""

    users: int = 300_000
    items: int = 280_000
    positives: int = 9_000_000
    device: str = "cpu"
    seed: int = 0
    sample: int = SAMPLE_USERS
    redis_url: str | None = None  # None: RECD_REDIS_URL or the local default
    settings: tuple[tuple[str, Any], ...] = ()  # more settings (name, value), for this process and the daemons
    keep: bool = False  # leave the keys and the model folder (``redis_prefix``, ``model_dir``) for inspection

    def world(self) -> World:
        return World(self.users, self.items, self.seed, new_items=max(1, round(self.items * GROWTH_ITEMS)))


def overrides_for(config: ScaleConfig, model_dir: Path) -> dict[str, Any]:
    """``load_settings`` overrides of the run: a prefix and a model folder of its own."""
    out: dict[str, Any] = {
        "redis_prefix": f"bench-scale-{uuid.uuid4().hex[:8]}:",
        "model_dir": str(model_dir),
        "device": config.device,
    }
    if config.redis_url:
        out["redis_url"] = config.redis_url
    return out | dict(config.settings)


def fits(overrides: dict[str, Any], config: ScaleConfig, preset: str) -> Figures:
    """The default preset's and item2vec's full fits, each in a child process."""
    main = in_child(fit_stage, overrides, preset, config.device)
    pairs = in_child(fit_stage, overrides, "item2vec", config.device)
    return {
        "fit_preset": preset,
        "fit_s": main["fit_s"],
        "fit_epochs": main["epochs"],
        "fit_s_per_epoch": main["fit_s_per_epoch"],
        "fit_samples_per_s": main["samples_per_s"],
        "fit_peak_rss_bytes": main["peak_rss_bytes"],
        "fit_rss_above_start_bytes": main["rss_above_start_bytes"],
        "fit_cuda_peak_bytes": main["cuda_peak_bytes"],
        "item2vec_s": pairs["fit_s"],
        "item2vec_epochs": pairs["epochs"],
        "item2vec_s_per_epoch": pairs["fit_s_per_epoch"],
        "item2vec_pairs": pairs["samples"],
        "item2vec_pairs_per_s": pairs["samples_per_s"],
        "item2vec_peak_rss_bytes": pairs["peak_rss_bytes"],
        "item2vec_rss_above_start_bytes": pairs["rss_above_start_bytes"],
        "item2vec_cuda_peak_bytes": pairs["cuda_peak_bytes"],
    }


def stages(config: ScaleConfig, overrides: dict[str, Any]) -> Figures:
    """Every stage in order (see the module docstring); the figures of all."""
    settings = load_settings(**overrides)
    world = config.world()
    figures: Figures = load_initial(settings, world, config.positives, int(time.time() * 1000))
    figures["load_peak_rss_bytes"] = status_bytes("VmHWM")
    figures |= in_child(snapshot_stage, overrides)
    daemons = DaemonRun(settings, config.device, config.users, config.seed, config.settings)
    figures |= daemon_phase(daemons, figures["load_s"])
    figures |= fits(overrides, config, settings.model_kind)
    figures |= in_child(index_stage, overrides, config.users, config.sample, config.seed)
    growth = round(config.positives * GROWTH_EVENTS)
    figures |= load_growth(settings, world, growth, int(time.time() * 1000))
    figures |= in_child(warm_stage, overrides, config.device, world.new_item_ids())
    return figures


PEAKS = ("load", "snapshot", "train", "serve", "fit", "item2vec", "index", "warm_start")


def run_scale(config: ScaleConfig) -> Figures:
    """The whole benchmark; its figures (``report``'s JSON). Keys and models are removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="recd-scale-"))
    overrides = overrides_for(config, folder / "models")
    try:
        figures = stages(config, overrides)
    finally:
        if not config.keep:
            drop_prefix(topology_of(load_settings(**overrides)).client, overrides["redis_prefix"])
            shutil.rmtree(folder, ignore_errors=True)
    peaks = {name: figures[f"{name}_peak_rss_bytes"] for name in PEAKS}
    worst = max(peaks, key=lambda name: peaks[name])
    return {
        "users": config.users,
        "items": config.items,
        "positives": config.positives,
        "device": config.device,
        "seed": config.seed,
        **figures,
        "peak_rss_bytes": peaks[worst],
        "peak_rss_stage": worst,
        **({"redis_prefix": overrides["redis_prefix"], "model_dir": str(folder)} if config.keep else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ScaleConfig()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--users", type=int, default=defaults.users)
    ap.add_argument("--items", type=int, default=defaults.items)
    ap.add_argument("--positives", type=int, default=defaults.positives)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--sample", type=int, default=defaults.sample, help="users whose queries measure recall@10")
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a recd setting for every stage and daemon"
    )
    ap.add_argument("--keep", action="store_true", help="leave the keys and models (the JSON names them)")
    return ap.parse_args(argv)


def config_of(args: argparse.Namespace) -> ScaleConfig:
    """The run's config from the command line (``--set`` values as the settings parse them from RECD_*)."""
    given = dict(spec.split("=", 1) for spec in args.set)
    parsed = load_settings(environ={f"RECD_{name.upper()}": value for name, value in given.items()})
    settings = tuple((name, getattr(parsed, name)) for name in given)
    return ScaleConfig(
        args.users, args.items, args.positives, args.device, args.seed, args.sample, settings=settings, keep=args.keep
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    loop_before = python_loop_seconds()
    result = run_scale(config_of(args))
    print(json.dumps({**result, "python_loop_s": [loop_before, python_loop_seconds()]}), flush=True)


if __name__ == "__main__":
    main()
