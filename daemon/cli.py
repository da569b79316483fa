"""The ``recd`` command line. Settings come from RECD_* variables and --config."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from daemon.config import ConfigError, describe, load_settings

EPILOG = "settings (environment variable, or the same name in lower case in the --config TOML file):\n"


def _daemon_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("ingest", help="consume events into Redis (with /metrics /healthz /readyz)")
    sub.add_parser("serve", help="keep changed users' lists fresh and answer lookups over HTTP")
    run = sub.add_parser("run", help="run the daemon's roles (ingest, serve, train) together")
    run.add_argument("--roles", help="comma-separated subset of ingest,serve,train (env RECD_ROLES)")
    train = sub.add_parser("train", help="train once from Redis (or keep training with --watch)")
    train.add_argument("--watch", action="store_true", help="run the training scheduler until stopped")
    sub.add_parser("topics", help="create the events, profiles and dead-letter topics")


def _data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prod = sub.add_parser("produce", help="publish synthetic events or replay a dataset")
    what = prod.add_mutually_exclusive_group(required=True)
    what.add_argument("--synthetic", type=int, metavar="N", help="publish N synthetic events (+ profiles)")
    what.add_argument("--dataset", type=Path, metavar="PATH", help="replay a dataset file or folder")
    prod.add_argument("--users", type=int, default=2000)
    prod.add_argument("--items", type=int, default=1000)
    prod.add_argument("--seed", type=int, default=0)
    prod.add_argument("--limit", type=int, help="replay at most this many events")
    ev = sub.add_parser("evaluate", help="offline evaluation of models and baselines on a dataset")
    ev.add_argument("dataset", type=Path)
    ev.add_argument("--models", default="ials,ials_tail,item2vec,popularity,als",
                    help="comma-separated presets and baselines")
    ev.add_argument("--plots", type=Path, metavar="DIR", help="write an embedding map and training curves here")
    ev.add_argument("--seed", type=int, default=0)


def _lookup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = sub.add_parser("recommend", help="print a user's recommendations (cold-start answer if unknown)")
    rec.add_argument("user_id")
    sim = sub.add_parser("similar", help="print the items most like an item")
    sim.add_argument("item_id")
    model = sub.add_parser("model", help="list, roll back or describe model versions")
    model.add_argument("action", choices=("list", "rollback", "presets"))
    model.add_argument("--to", help="version to roll back to (default: the previously published one)")
    demo = sub.add_parser("demo", help="run everything on an embedded broker and print recommendations")
    demo.add_argument("--events", type=int, default=60000)
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--items", type=int, default=1000)
    demo.add_argument("--dataset", type=Path, help="replay this dataset instead of synthetic events")
    demo.add_argument("--out", type=Path, default=Path("var/demo"), help="folder for models and plots")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recd", description="recd: event-driven online recommender daemon",
        epilog=EPILOG + describe(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML settings file (env RECD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _daemon_commands(sub)
    _data_commands(sub)
    _lookup_commands(sub)
    return parser


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
    from daemon.commands import COMMANDS

    try:
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"recd: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
