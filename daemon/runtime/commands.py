"""What each ``recd`` subcommand does (the parser lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.runtime.settings import Settings

if TYPE_CHECKING:
    from daemon.api.lookup import Lookup
    from trainer.models.base import EmbeddingModel
    from trainer.snapshot import ModelStore

Command = Callable[[Settings, argparse.Namespace], int]


def _print(doc: object) -> None:
    print(json.dumps(doc, indent=2, default=str))


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.runtime.roles import run_daemon

    roles = tuple(r.strip() for r in args.roles.split(",")) if getattr(args, "roles", None) else settings.roles
    return run_daemon(settings.replace(roles=roles))


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    return cmd_run(settings.replace(roles=("ingest",)), argparse.Namespace())


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    return cmd_run(settings.replace(roles=("serve",)), argparse.Namespace())


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    if args.watch:
        return cmd_run(settings.replace(roles=("train",)), argparse.Namespace())
    from prometheus_client import CollectorRegistry

    from daemon.runtime.app import build_trainer
    from daemon.runtime.metrics import Metrics

    terminal = sys.stderr if sys.stderr.isatty() else None  # progress bars on a terminal; log lines elsewhere
    outcome = build_trainer(settings, Metrics(CollectorRegistry()), terminal).run_once()
    _print(outcome.__dict__)
    return 0 if outcome.status in ("published", "skipped") else 1


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.dev.publish import publish_dataset, publish_synthetic
    from daemon.dev.synthetic import SyntheticSpec
    from daemon.runtime.app import create_topics, wait_for_broker

    wait_for_broker(settings, 0)
    create_topics(settings)
    if args.synthetic is not None:
        sent = publish_synthetic(
            settings, SyntheticSpec(users=args.users, items=args.items, seed=args.seed), args.synthetic
        )
    else:
        sent = publish_dataset(settings, args.dataset, args.limit)
    _print({**sent._asdict(), "topic": settings.events_topic, "items_topic": settings.items_topic})
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.runtime.app import create_topics, wait_for_broker

    wait_for_broker(settings, 0)
    for name, created in create_topics(settings).items():
        print(f"{name}: {'created' if created else 'exists'}")
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from daemon.runtime.app import wait_for_broker
    from daemon.runtime.options import limits
    from daemon.runtime.rebuild import rebuild
    from daemon.runtime.settings import ConfigError
    from schemas.events import InvalidEvent, parse_ts

    wait_for_broker(settings, 0)
    start_ms = None
    if args.from_timestamp:
        raw = int(args.from_timestamp) if args.from_timestamp.isdigit() else args.from_timestamp
        try:
            start_ms = parse_ts(raw, limits(settings), int(time.time() * 1000))
        except InvalidEvent as exc:
            raise ConfigError(f"--from-timestamp: {exc.detail}") from None
    _print(rebuild(settings, args.prefix, start_ms))
    if args.prefix and args.prefix != settings.redis_prefix:
        print(f"# caught up: point the daemons and applications at RECD_REDIS_PREFIX={args.prefix}")
    return 0


def cmd_refresh_lists(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from daemon.runtime.options import keys_of, topology_of
    from daemon.serve.workqueue import WorkQueue

    since_ms = int((time.time() - args.days * 86400) * 1000)
    queued = WorkQueue(topology_of(settings), keys_of(settings)).queue_refresh(since_ms)
    print(f"{queued} users' lists queued to be rewritten; the serve role rewrites them, most recent first")
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.dev.devup import run_dev_up

    return run_dev_up(settings, primaries=args.redis_cluster)


def _lookup(settings: Settings) -> Lookup:
    from prometheus_client import CollectorRegistry

    from daemon.runtime.app import build_lookup, build_watcher
    from daemon.runtime.metrics import Metrics
    from daemon.runtime.options import keys_of, topology_of
    from daemon.runtime.state import check_layout

    check_layout(topology_of(settings), keys_of(settings))  # a wrong RECD_REDIS_SHARDS would read other shards
    watcher = build_watcher(settings, Metrics(CollectorRegistry()))
    watcher.poll(wait=True)
    return build_lookup(settings, lambda: watcher.current)


def cmd_recommend(settings: Settings, args: argparse.Namespace) -> int:
    lookup = _lookup(settings)
    _print(json.loads(lookup.recommendations(args.user_id, settings.top_k).to_json()))
    return 0


def cmd_similar(settings: Settings, args: argparse.Namespace) -> int:
    lookup = _lookup(settings)
    sim = lookup.similar(args.item_id, settings.top_k)
    if sim is None:
        print(f"recd: item {args.item_id!r} is not known to the served model")
        return 1
    _print(json.loads(sim.to_json()))
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.runtime.options import keys_of
    from daemon.runtime.redisconn import redis_client
    from daemon.train.publish import publish
    from trainer.snapshot import ModelStore

    if args.action == "presets":
        from trainer.models.registry import PRESETS

        _print(PRESETS)
        return 0
    store = ModelStore(Path(settings.model_dir))
    if args.action == "inspect":
        return _inspect(settings, store, args)
    if args.action == "list":
        current = store.current()
        _print([{**json.loads(m.to_json()), "current": m.version == current} for m in store.list()])
        return 0
    version = store.rollback(args.to)
    pointer = publish(redis_client(settings), keys_of(settings), store, version)
    _print({"rolled_back_to": pointer.version, "path": pointer.path})
    return 0


def _inspect(settings: Settings, store: ModelStore, args: argparse.Namespace) -> int:
    """``recd model inspect``: the biases' extremes and items' nearest neighbours of a saved model, named by
    the titles of --titles or else of the catalogue in Redis."""
    from trainer.inspect import bias_extremes, item_biases, named, neighbours, read_titles
    from trainer.snapshot import ModelStoreError, load_snapshot

    version = args.version or store.current()
    if version is None or not store.exists(version):
        raise ModelStoreError(f"no model {'version ' + repr(version) if version else 'published yet'} in {store.root}")
    model, manifest = load_snapshot(store.path(version))
    biases = item_biases(model)
    shown = [i.strip() for i in args.items.split(",") if i.strip()] if args.items else _default_items(model, biases)
    index = model.item_index()
    unknown = [i for i in shown if i not in index]
    if unknown:
        raise ModelStoreError(f"items not in model {version}: {', '.join(unknown[:5])}")
    found = list(neighbours(model, [index[i] for i in shown], args.k))
    ends = bias_extremes(model.item_ids, biases, args.top) if biases is not None else None
    listed = shown + [n.item_id for near in found for n in near] + [i for part in ends or () for i, _ in part]
    titles = {**_catalogue_titles(settings, listed), **(read_titles(args.titles) if args.titles else {})}
    doc: dict[str, object] = {"version": version, "model_type": manifest.model_type, "items": model.n_items}
    if ends is not None:
        doc["highest_bias"], doc["lowest_bias"] = (
            [{"item_id": i, "title": titles.get(i), "bias": round(b, 4)} for i, b in part] for part in ends
        )
    doc["neighbours"] = {
        i: [{"item_id": n.item_id, "title": titles.get(n.item_id), "cosine": round(n.cosine, 4)} for n in near]
        for i, near in zip(shown, found, strict=True)
    }
    if args.json:
        _print(doc)
    else:
        print(_inspect_text(doc, titles, named), end="")
    return 0


def _catalogue_titles(settings: Settings, item_ids: list[str]) -> dict[str, str]:
    """Titles of ``item_ids`` from their catalogue records in Redis (one HMGET per shard); none, with a note on
    stderr, when Redis does not answer: a saved model is inspected without it."""
    import redis

    from daemon.runtime.options import keys_of, topology_of
    from schemas.catalogue import from_stored
    from trainer.inspect import catalogue_titles

    keys = keys_of(settings)
    by_shard: dict[int, list[str]] = {}
    for item in dict.fromkeys(item_ids):
        by_shard.setdefault(keys.shard_of(item), []).append(item)
    attributes: dict[str, dict[str, tuple[str, ...]]] = {}
    try:
        topology = topology_of(settings)
        for shard, items in sorted(by_shard.items()):
            key = keys.catalogue(shard)
            for item, raw in zip(items, topology.node_of(key).hmget(key, items), strict=True):
                if raw:
                    attributes[item] = from_stored(raw).attributes
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(f"recd: no titles from the catalogue (Redis: {exc})", file=sys.stderr)
        return {}
    return catalogue_titles(attributes)


def _default_items(model: EmbeddingModel, biases: object) -> list[str]:
    """Without --items: the ten items of highest bias, or the model's first ten."""
    import numpy as np

    if isinstance(biases, np.ndarray):
        return [model.item_ids[i] for i in np.argsort(-biases, kind="stable")[:10]]
    return model.item_ids[:10]


def _inspect_text(doc: dict[str, Any], titles: dict[str, str], named: Callable[[str, dict[str, str]], str]) -> str:
    lines = [f"model {doc['version']} ({doc['model_type']}, {doc['items']} items)"]
    for key, heading in (("highest_bias", "highest item bias"), ("lowest_bias", "lowest item bias")):
        if key in doc:
            lines += ["", f"{heading}:"] + [f"  {r['bias']:+.4f}  {named(r['item_id'], titles)}" for r in doc[key]]
    if "highest_bias" not in doc:
        lines += ["", "this model learns no item bias"]
    for item, near in doc["neighbours"].items():
        lines += ["", f"nearest to {named(item, titles)}:"]
        lines += [f"  {n['cosine']:.3f}  {named(n['item_id'], titles)}" for n in near] or ["  (none: a zero vector)"]
    return "\n".join(lines) + "\n"


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from trainer.evaluation.report import run_evaluation
    from trainer.evaluation.table import format_table

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result = run_evaluation(args.dataset, models=models, plots_dir=args.plots, seed=args.seed, fmt=args.format)
    if args.json:
        _print(result)
    else:
        print(format_table(result), end="")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.dev.demo import run_demo

    return run_demo(settings, args)


COMMANDS: dict[str, Command] = {
    "ingest": cmd_ingest,
    "serve": cmd_serve,
    "run": cmd_run,
    "train": cmd_train,
    "produce": cmd_produce,
    "topics": cmd_topics,
    "recommend": cmd_recommend,
    "similar": cmd_similar,
    "model": cmd_model,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "dev": cmd_dev,
    "rebuild": cmd_rebuild,
    "refresh-lists": cmd_refresh_lists,
}
