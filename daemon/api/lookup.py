"""Lookups for applications: the HTTP API (and the CLI's recommend/similar).

``GET /recommendations/{user_id}`` returns the stored list; a user without one
gets the cold-start answer (profile segment, else trending). ``GET
/similar/{item_id}`` returns the stored item-to-item list, or computes it from
the served index. ``?k=`` trims a list. Ids are 1 to 256 characters and ``k`` 1 to
the configured top K; other input gets a 400 with the reason. Stored lists are read
with the asyncio Redis client on the server's event loop; the cold-start and
index answers, which read several keys or search the index, run in its thread pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from daemon.api.http import BadRequest, Endpoint, Routes, error
from daemon.api.openapi import error_response, lookup_operation
from daemon.runtime.redisconn import AsyncRedisClient, RedisClient
from daemon.runtime.state import StateReader
from daemon.serve.coldstart import ColdStart
from daemon.serve.index import ServingIndex
from schemas.jsonschema import recommendation_list, similar_list
from schemas.records import RecommendationList, SimilarList

log = logging.getLogger(__name__)

MAX_ID_LEN = 256
JSON = "application/json"


def _id(value: str, name: str) -> str:
    if not value.strip():
        raise BadRequest(f"{name} is empty")
    if len(value) > MAX_ID_LEN:
        raise BadRequest(f"{name} is longer than {MAX_ID_LEN} characters")
    return value


def _k(values: list[str], top_k: int) -> int:
    raw = values[-1] if values else str(top_k)
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= top_k:
        raise BadRequest(f"k must be an integer between 1 and {top_k}, got {raw[:20]!r}")
    return int(raw)


def _stored_rec(raw: Any, k: int) -> RecommendationList:
    rec = RecommendationList.from_json(raw)
    return RecommendationList(rec.user_id, rec.items[:k], rec.scores[:k], rec.source, rec.model_version, rec.updated_at)


def _stored_sim(raw: Any, k: int) -> SimilarList:
    sim = SimilarList.from_json(raw)
    return SimilarList(sim.item_id, sim.items[:k], sim.scores[:k], sim.model_version, sim.updated_at)


class Lookup:
    def __init__(
        self,
        reader: StateReader,
        cold: ColdStart,
        top_k: int,
        current: Callable[[], ServingIndex | None],
        async_client: Callable[[], AsyncRedisClient] | None = None,
    ) -> None:
        self.client: RedisClient = reader.client
        self.keys = reader.keys
        self.cold = cold
        self.reader = reader
        self.top_k = top_k
        self.current = current
        self.make_async_client = async_client
        self._async: AsyncRedisClient | None = None  # made on the server's event loop, at its first lookup

    def recommendations(self, user_id: str, k: int) -> RecommendationList:
        raw: Any = self.client.get(self.keys.rec(user_id))
        return _stored_rec(raw, k) if raw else self.cold_list(user_id, k)

    def cold_list(self, user_id: str, k: int) -> RecommendationList:
        """The answer for a user without a stored list: their segment's, else trending; their seen items out."""
        profile = self.reader.profiles([user_id])[user_id]
        seen = {item for item, _ in self.reader.histories_by_item_id([user_id])[user_id]}
        items, scores, source = self.cold.for_user(profile.segments if profile else [], seen, k)
        index = self.current()
        return RecommendationList(
            user_id, items, scores, source, index.version if index else "none", int(time.time() * 1000)
        )

    def similar(self, item_id: str, k: int) -> SimilarList | None:
        raw: Any = self.client.get(self.keys.sim(item_id))
        return _stored_sim(raw, k) if raw else self.index_similar(item_id, k)

    def index_similar(self, item_id: str, k: int) -> SimilarList | None:
        """The served index's neighbours of an item without a stored list; None when the model lacks it."""
        index = self.current()
        if index is None or not index.knows(item_id):
            return None
        items, scores = index.similar(item_id, k)
        return SimilarList(item_id, items, scores, index.version, int(time.time() * 1000))

    def _async_client(self) -> AsyncRedisClient:
        if self._async is None:
            if self.make_async_client is None:
                raise RuntimeError("this Lookup was built without an asyncio Redis client: no HTTP routes")
            self._async = self.make_async_client()
        return self._async

    async def close(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    async def _rec_route(self, request: Request) -> Response:
        user_id = _id(request.path_params["user_id"], "user_id")
        k = _k(request.query_params.getlist("k"), self.top_k)
        raw: Any = await self._async_client().get(self.keys.rec(user_id))
        rec = _stored_rec(raw, k) if raw else await run_in_threadpool(self.cold_list, user_id, k)
        return Response(rec.to_json(), media_type=JSON)

    async def _sim_route(self, request: Request) -> Response:
        item_id = _id(request.path_params["item_id"], "item_id")
        k = _k(request.query_params.getlist("k"), self.top_k)
        raw: Any = await self._async_client().get(self.keys.sim(item_id))
        sim = _stored_sim(raw, k) if raw else await run_in_threadpool(self.index_similar, item_id, k)
        if sim is None:
            return error(404, f"item {item_id[:60]!r} is not known to the served model")
        return Response(sim.to_json(), media_type=JSON)

    def add_routes(self, routes: Routes) -> None:
        rec, sim = recommendation_list(), similar_list()
        for doc in (rec, sim):
            doc.pop("$schema", None)
        unavailable = {"503": error_response("Redis unavailable (retry later)")}
        rec_op = lookup_operation(
            "user_id", MAX_ID_LEN, self.top_k, "A user's top-K (cold-start answer when unknown)", rec, unavailable
        )
        sim_op = lookup_operation(
            "item_id",
            MAX_ID_LEN,
            self.top_k,
            "Items most like an item",
            sim,
            {"404": error_response("the item is not known to the served model"), **unavailable},
        )
        routes.add(Endpoint("recommendations", "/recommendations/{user_id}", self._rec_route, rec_op))
        routes.add(Endpoint("similar", "/similar/{item_id}", self._sim_route, sim_op))
        routes.on_close.append(self.close)
