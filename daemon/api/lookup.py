"""Lookups for applications: the HTTP API (and the CLI's recommend/similar).

``GET /recommendations/{user_id}`` returns the stored list; a user without one
gets the cold-start answer (profile segment, else trending). ``GET
/similar/{item_id}`` returns the stored item-to-item list, or computes it from
the served index. ``?k=`` trims a list. Bad input gets a 4xx with a reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from daemon.api.http import Handler, Routes
from daemon.runtime.redisconn import REDIS_OUTAGE
from daemon.runtime.state import StateReader
from daemon.serve.coldstart import ColdStart
from daemon.serve.index import ServingIndex
from schemas.jsonschema import recommendation_list, similar_list
from schemas.records import RecommendationList, SimilarList

log = logging.getLogger(__name__)

MAX_ID_LEN = 256


class BadRequest(ValueError):
    pass


def _id(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value.strip():
        raise BadRequest(f"{name} is empty")
    if len(value) > MAX_ID_LEN:
        raise BadRequest(f"{name} is longer than {MAX_ID_LEN} characters")
    return value


def _k(query: dict[str, list[str]], top_k: int) -> int:
    raw = query.get("k", [str(top_k)])[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= top_k:
        raise BadRequest(f"k must be an integer between 1 and {top_k}, got {raw[:20]!r}")
    return int(raw)


def unavailable_as_503(handler: Handler) -> Handler:
    """A Redis outage answers 503 with the reason (as /readyz does), not a 500 and a traceback."""

    def route(params: dict[str, str], query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            return handler(params, query)
        except REDIS_OUTAGE as exc:
            log.warning("lookup answered 503: redis unavailable (%s)", exc)
            return 503, {"error": f"redis unavailable: {exc}"}

    return route


class Lookup:
    def __init__(
        self, reader: StateReader, cold: ColdStart, top_k: int, current: Callable[[], ServingIndex | None]
    ) -> None:
        self.client = reader.client
        self.keys = reader.keys
        self.cold = cold
        self.reader = reader
        self.top_k = top_k
        self.current = current

    def recommendations(self, user_id: str, k: int) -> RecommendationList:
        raw: Any = self.client.get(self.keys.rec(user_id))
        if raw:
            rec = RecommendationList.from_json(raw)
            return RecommendationList(
                rec.user_id, rec.items[:k], rec.scores[:k], rec.source, rec.model_version, rec.updated_at
            )
        profile = self.reader.profiles([user_id])[user_id]
        seen = {item for item, _ in self.reader.histories_by_item_id([user_id])[user_id]}
        items, scores, source = self.cold.for_user(profile.segments if profile else [], seen, k)
        index = self.current()
        return RecommendationList(
            user_id, items, scores, source, index.version if index else "none", int(time.time() * 1000)
        )

    def similar(self, item_id: str, k: int) -> SimilarList | None:
        raw: Any = self.client.get(self.keys.sim(item_id))
        if raw:
            sim = SimilarList.from_json(raw)
            return SimilarList(sim.item_id, sim.items[:k], sim.scores[:k], sim.model_version, sim.updated_at)
        index = self.current()
        if index is None or item_id not in index.item_pos:
            return None
        items, scores = index.similar(item_id, k)
        return SimilarList(item_id, items, scores, index.version, int(time.time() * 1000))

    def add_routes(self, routes: Routes) -> None:
        routes.add("recommendations", "/recommendations/{user_id}", unavailable_as_503(self._rec_route))
        routes.add("similar", "/similar/{item_id}", unavailable_as_503(self._sim_route))
        routes.add("openapi", "/openapi.json", lambda _p, _q: (200, openapi(self.top_k)))

    def _rec_route(self, params: dict[str, str], query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            rec = self.recommendations(_id(params, "user_id"), _k(query, self.top_k))
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        return 200, rec.to_json()  # already JSON: sent as it is

    def _sim_route(self, params: dict[str, str], query: dict[str, list[str]]) -> tuple[int, Any]:
        try:
            item_id, k = _id(params, "item_id"), _k(query, self.top_k)
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        sim = self.similar(item_id, k)
        if sim is None:
            return 404, {"error": f"item {item_id[:60]!r} is not known to the served model"}
        return 200, sim.to_json()


ERROR_BODY: dict[str, Any] = {
    "description": "bad input",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    },
}
UNAVAILABLE = {"503": {**ERROR_BODY, "description": "Redis unavailable (retry later)"}}


def _lookup_path(name: str, summary: str, schema: dict[str, Any], top_k: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One GET route: the id in the path, ``k`` in the query, the list or an error back."""
    id_param = {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": MAX_ID_LEN}}
    k_param = {
        "name": "k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": top_k, "default": top_k},
    }
    ok = {"description": "the list", "content": {"application/json": {"schema": schema}}}
    responses = {"200": ok, "400": ERROR_BODY, **extra}
    return {"get": {"summary": summary, "parameters": [id_param, k_param], "responses": responses}}


def openapi(top_k: int) -> dict[str, Any]:
    """OpenAPI 3.1 description of the lookup API."""
    rec, sim = recommendation_list(), similar_list()
    for doc in (rec, sim):
        doc.pop("$schema", None)
    summary = "A user's top-K (cold-start answer when unknown)"
    return {
        "openapi": "3.1.0",
        "info": {"title": "recd lookups", "version": "1"},
        "paths": {
            "/recommendations/{user_id}": _lookup_path("user_id", summary, rec, top_k, UNAVAILABLE),
            "/similar/{item_id}": _lookup_path(
                "item_id", "Items most like an item", sim, top_k, {"404": ERROR_BODY, **UNAVAILABLE}
            ),
        },
    }
