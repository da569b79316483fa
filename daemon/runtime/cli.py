"""The ``recd`` command line. Settings come from RECD_* variables and --config.

Every error a user can cause or meet (bad settings, Redis or the broker away, a
model version that does not exist) ends the command with one line on stderr
and a non-zero code; the traceback is logged at DEBUG (``RECD_LOG_LEVEL=DEBUG``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TypeAlias

from daemon.runtime.settings import Settings, describe, load_settings

EPILOG = "settings (environment variable, or the same name in lower case in the --config TOML file):\n"
OUR_LOGGERS = ("daemon", "trainer", "schemas", "bench")
DEFAULT_EVALUATION = "ials,ials_tail,item2vec,side_info,popularity,als"

log = logging.getLogger("daemon.runtime.cli")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (where it has one worth showing), keeps descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes too, so ``recd model list --config x.toml`` works."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file (env RECD_CONFIG)")
    return parent


Adder: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add(sub: Adder, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, parents=[_common()], formatter_class=_Formatter
    )
    return parser


def _daemon_commands(sub: Adder) -> None:
    _add(sub, "ingest", "consume events into Redis (with /metrics /healthz /readyz)")
    _add(sub, "serve", "keep changed users' lists fresh and answer lookups over HTTP")
    run = _add(sub, "run", "run the daemon's roles (ingest, serve, train) together")
    run.add_argument("--roles", help="comma-separated subset of ingest,serve,train (default: env RECD_ROLES)")
    train = _add(sub, "train", "train once from Redis (or keep training with --watch)")
    train.add_argument("--watch", action="store_true", help="run the training scheduler until stopped")
    _add(sub, "topics", "create the events, profiles, catalogue and dead-letter topics (prints each)")
    relist = _add(sub, "refresh-lists", "queue every recently served user's list to be rewritten (after exclusions)")
    relist.add_argument("--days", type=float, default=30.0, help="users served within this many days")
    rebuild = _add(sub, "rebuild", "replay the topics into Redis (after Redis lost its data, or into a new prefix)")
    rebuild.add_argument("--prefix", help="write under this RECD_REDIS_PREFIX instead of the daemon's (then switch)")
    rebuild.add_argument(
        "--from-timestamp",
        metavar="T",
        help="start at this time (epoch ms or RFC 3339) instead of the earliest retained offset",
    )
    dev = _add(sub, "dev", "development servers: `recd dev up` starts a local broker (and Redis if none answers)")
    dev.add_argument(
        "action", choices=("up",), help="up: start them, print the variables to export, stop them on Ctrl-C"
    )
    dev.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="start a local Redis Cluster of N primaries (each with a replica) instead of using one Redis",
    )


def _data_commands(sub: Adder) -> None:
    prod = _add(sub, "produce", "publish synthetic events or replay a dataset")
    what = prod.add_mutually_exclusive_group(required=True)
    what.add_argument("--synthetic", type=int, metavar="N", help="publish N synthetic events (+ profiles, catalogue)")
    what.add_argument("--dataset", type=Path, metavar="PATH", help="replay a dataset file or folder")
    prod.add_argument("--users", type=int, default=2000, help="synthetic users")
    prod.add_argument("--items", type=int, default=1000, help="synthetic items")
    prod.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    prod.add_argument(
        "--limit",
        type=int,
        help="replay at most this many events of the dataset (default: all); profiles and catalogue are sent whole",
    )
    ev = _add(sub, "evaluate", "offline evaluation of models and baselines on a dataset")
    ev.add_argument("dataset", type=Path, help="dataset file or folder")
    ev.add_argument("--models", default=DEFAULT_EVALUATION, help=f"comma-separated names: {_model_names()}")
    ev.add_argument("--plots", type=Path, metavar="DIR", help="write an embedding map and training curves here")
    ev.add_argument("--seed", type=int, default=0, help="seed of the splits and fits")
    ev.add_argument(
        "--format",
        choices=("recbole", "csv", "triples", "adjacency"),
        help="the dataset's file format (default: detected from the files)",
    )
    ev.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _model_names() -> str:
    from trainer.evaluation.baselines import BASELINES
    from trainer.models.registry import PRESETS

    return f"presets {', '.join(PRESETS)}; baselines {', '.join(BASELINES)}"


def _lookup_commands(sub: Adder) -> None:
    rec = _add(sub, "recommend", "print a user's recommendations (cold-start answer if unknown)")
    rec.add_argument("user_id")
    sim = _add(sub, "similar", "print the items most like an item")
    sim.add_argument("item_id")
    model = _add(sub, "model", "list, roll back, inspect or describe model versions")
    model.add_argument("action", choices=("list", "rollback", "presets", "inspect"))
    model.add_argument("--to", help="version to roll back to (default: the previously published one)")
    model.add_argument("--version", help="inspect: the model version (default: the current one)")
    model.add_argument("--items", help="inspect: comma-separated item ids to show neighbours of")
    model.add_argument("--top", type=int, default=10, help="inspect: items at each end of the biases")
    model.add_argument("-k", type=int, default=10, help="inspect: neighbours per item")
    model.add_argument("--titles", type=Path, help="inspect: a file of item ids and titles (a RecBole .item)")
    model.add_argument("--json", action="store_true", help="inspect: print JSON instead of text")
    demo = _add(sub, "demo", "run everything on an embedded broker and print recommendations")
    demo.add_argument(
        "--events",
        type=int,
        default=60000,
        help="synthetic events to publish (with --dataset: replay at most this many)",
    )
    demo.add_argument("--users", type=int, default=2000, help="synthetic users")
    demo.add_argument("--items", type=int, default=1000, help="synthetic items")
    demo.add_argument("--dataset", type=Path, help="replay this dataset instead of synthetic events")
    demo.add_argument("--out", type=Path, default=Path("var/demo"), help="folder for models and plots")
    demo.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the report, keep the daemon and its HTTP lookups running until Ctrl-C",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recd",
        description="recd: event-driven online recommender daemon",
        epilog=EPILOG + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML settings file (env RECD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _daemon_commands(sub)
    _data_commands(sub)
    _lookup_commands(sub)
    return parser


def _not_a_close_race(record: logging.LogRecord) -> bool:
    """kafka-python 3.0 logs an ERROR with a traceback when a consumer is closed while its network thread
    reads (``'NoneType' object has no attribute 'recv'``): harmless, and not the user's concern."""
    return not (record.exc_info and record.exc_info[0] is AttributeError and "closing socket" in record.getMessage())


def configure_logging(level: str, libraries_too: bool) -> None:
    """recd's own loggers at ``level``; other libraries' chatter (faiss's loader, kafka-python) only from
    WARNING up - and kafka-python's event-loop timing notes and its close race not at all - unless
    RECD_LOG_LEVEL asked for a level explicitly."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper() if libraries_too else logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    if not libraries_too:
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
        logging.getLogger("kafka.net.transport").addFilter(_not_a_close_race)


def _settings(args: argparse.Namespace) -> Settings:
    explicit = "RECD_LOG_LEVEL" in os.environ
    configure_logging(os.environ.get("RECD_LOG_LEVEL", "INFO"), explicit)  # before load: it warns
    settings = load_settings(args.config)
    configure_logging(settings.log_level, explicit or settings.log_level.upper() != "INFO")
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = _settings(args)
        from daemon.runtime.commands import COMMANDS

        return COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        print("recd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error ends in one line; the traceback only at DEBUG
        from daemon.runtime.errors import describe_error

        log.debug("command %s failed", args.command, exc_info=True)
        message, code = describe_error(exc, settings)
        print(f"recd: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
