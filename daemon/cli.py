"""The ``recd`` command line. Settings come from RECD_* variables and --config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from daemon.config import ConfigError, Settings, describe, load_settings

log = logging.getLogger("recd")

EPILOG = "settings (environment variable, or the same name in lower case in the --config TOML file):\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recd", description="recd: event-driven online recommender daemon",
        epilog=EPILOG + describe(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML settings file (env RECD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("ingest", help="consume events into Redis (with /metrics /healthz /readyz)")
    run = sub.add_parser("run", help="run the daemon's roles (ingest, serve, train) together")
    run.add_argument("--roles", help="comma-separated subset of ingest,serve,train (env RECD_ROLES)")
    prod = sub.add_parser("produce", help="publish synthetic events or replay a dataset")
    what = prod.add_mutually_exclusive_group(required=True)
    what.add_argument("--synthetic", type=int, metavar="N", help="publish N synthetic events (+ profiles)")
    what.add_argument("--dataset", type=Path, metavar="PATH", help="replay a dataset file or folder")
    prod.add_argument("--users", type=int, default=2000)
    prod.add_argument("--items", type=int, default=1000)
    prod.add_argument("--seed", type=int, default=0)
    prod.add_argument("--limit", type=int, help="replay at most this many events")
    sub.add_parser("topics", help="create the events, profiles and dead-letter topics")
    demo = sub.add_parser("demo", help="run everything on an embedded broker and print recommendations")
    demo.add_argument("--events", type=int, default=60000)
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--items", type=int, default=1000)
    demo.add_argument("--dataset", type=Path, help="replay this dataset instead of synthetic events")
    demo.add_argument("--out", type=Path, default=Path("var/demo"), help="folder for models and plots")
    return parser


def cmd_ingest(settings: Settings, _args: argparse.Namespace) -> int:
    return cmd_run(settings.replace(roles=("ingest",)), _args)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.roles import run_daemon

    roles = tuple(r.strip() for r in args.roles.split(",")) if getattr(args, "roles", None) else settings.roles
    return run_daemon(settings.replace(roles=roles))


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.produce import SyntheticSpec
    from daemon.publish import ensure_topics, publish_dataset, publish_synthetic

    ensure_topics(settings)
    if args.synthetic is not None:
        spec = SyntheticSpec(users=args.users, items=args.items, seed=args.seed)
        n_prof, n_ev = publish_synthetic(settings, spec, args.synthetic)
    else:
        n_prof, n_ev = publish_dataset(settings, args.dataset, args.limit)
    print(json.dumps({"profiles": n_prof, "events": n_ev, "topic": settings.events_topic}))
    return 0


def cmd_topics(settings: Settings, _args: argparse.Namespace) -> int:
    from daemon.publish import ensure_topics

    ensure_topics(settings)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo(settings, args)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "ingest": cmd_ingest, "run": cmd_run, "produce": cmd_produce, "topics": cmd_topics, "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"recd: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
