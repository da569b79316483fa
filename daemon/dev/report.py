"""What the demo prints: a few users' lists, a cold user's list, similar items, where to look next."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.runtime.app import App
from daemon.runtime.settings import Settings
from daemon.runtime.state import StateReader
from schemas.catalogue import CatalogueEvent
from schemas.records import RecommendationList, SimilarList

RUN_PORT = Settings().metrics_port  # where `recd run` listens by default

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shown:
    """What the report names: item titles, the user with only a profile, the new item sent to the catalogue."""

    titles: dict[str, str]
    cold_user: str
    new_item: CatalogueEvent | None


def _name(item: str, titles: dict[str, str]) -> str:
    title = titles.get(item)
    return f"{item} ({title})" if title else item


def _print_list(header: str, items: list[str], scores: list[float], titles: dict[str, str]) -> None:
    print(header)
    for rank, (item, score) in enumerate(zip(items, scores, strict=True), 1):
        print(f"   {rank:>2}. {_name(item, titles):<60} {score:8.4f}")


def _warm_lists(reader: StateReader, n: int) -> list[RecommendationList]:
    """The lists of the ``n`` most recently served users whom the model served (not cold start)."""
    raw: Any = [reader.client.get(reader.keys.rec(u)) for u in reader.recently_served(20 * n)]
    lists = [RecommendationList.from_json(r) for r in raw if r]
    return [rec for rec in lists if rec.source == "ann"][:n]


def print_report(
    settings: Settings, app: App, reader: StateReader, shown: Shown, out: Path, metrics_url: str, live: bool
) -> None:
    """Three warm users' lists, the cold user's, the most popular item's neighbours, the new item's, plots,
    where to look next."""
    client, keys, titles = reader.client, reader.keys, shown.titles
    print()
    _print_warm(reader, titles)
    raw_cold: Any = client.get(keys.rec(shown.cold_user))
    if raw_cold:
        cold = RecommendationList.from_json(raw_cold)
        header = f"new user {shown.cold_user} with only a profile - source {cold.source}"
        _print_list(header, cold.items, cold.scores, titles)
    top = reader.popularity(1)
    raw_sim: Any = client.get(keys.sim(top[0][0])) if top else None
    if raw_sim:
        sim = SimilarList.from_json(raw_sim)
        _print_list(f"items like the most popular one, {_name(sim.item_id, titles)}", sim.items, sim.scores, titles)
    _print_new_item(reader, shown)
    plots = write_plots(reader, app, titles, out)
    if plots:
        print(f"\nplots: {', '.join(str(p) for p in plots)}")
    _print_routes(settings, metrics_url, live)


def _print_new_item(reader: StateReader, shown: Shown) -> None:
    """The similar items of the item sent to the catalogue with no events: placed by its attributes."""
    if shown.new_item is None:
        return
    raw: Any = reader.client.get(reader.keys.sim(shown.new_item.item_id))
    if raw:
        sim = SimilarList.from_json(raw)
        fields = list(shown.new_item.attributes.items())[:3]  # a dataset's item may carry dozens of values
        attributes = "; ".join(f"{f}: {', '.join(vs[:3])}" for f, vs in fields)
        header = f"items like {sim.item_id}, new in the catalogue with no events ({attributes})"
        _print_list(header, sim.items, sim.scores, shown.titles)


def _print_warm(reader: StateReader, titles: dict[str, str]) -> None:
    """The most recently served warm users' lists, each with what they did last."""
    for rec in _warm_lists(reader, 3):
        recent = [item for item, _ in reader.histories_by_item_id([rec.user_id])[rec.user_id][-3:]]
        header = (
            f"user {rec.user_id} (recently: {', '.join(_name(i, titles) for i in recent)}) "
            f"- source {rec.source}, model {rec.model_version}"
        )
        _print_list(header, rec.items, rec.scores, titles)


def _print_routes(settings: Settings, metrics_url: str, live: bool) -> None:
    """Where the lookups and metrics are: the demo's own server while it keeps serving, else `recd run`'s."""
    if live:
        print(
            f"\nserving until Ctrl-C (then the demo removes its keys and stops its servers):\n"
            f"  metrics: {metrics_url}/metrics   lookups: {metrics_url}/recommendations/<user_id>  "
            f"{metrics_url}/similar/<item_id>   API: {metrics_url}/openapi.json",
            flush=True,
        )
        return
    routes = f"http://{settings.http_host}:{RUN_PORT}"
    print(
        f"\nThe demo stops now and removes its keys; `recd demo --keep-serving` keeps it answering until "
        f"Ctrl-C.\n`recd run` serves the same routes on your own data, on RECD_METRICS_PORT:\n"
        f"  metrics: {routes}/metrics   lookups: {routes}/recommendations/<user_id>  "
        f"{routes}/similar/<item_id>   API: {routes}/openapi.json"
    )


def write_plots(reader: StateReader, app: App, titles: dict[str, str], out: Path) -> list[Path]:
    """Embedding map of the served model (matplotlib is optional)."""
    try:
        from trainer.evaluation.plots import plot_embedding_map
    except ImportError:
        return []
    index = app.watcher.current if app.watcher is not None else None
    if index is None:
        return []
    popularity = dict(reader.popularity())
    path = out / "embedding_map.png"
    try:
        plot_embedding_map(index.model, titles, popularity, path)
    except Exception:  # a plot must never fail the demo
        log.exception("could not draw the embedding map")
        return []
    return [path]
