"""The OpenAPI 3.1 document of the HTTP server, generated from its route table.

Every route the application serves appears in the document with the operation its endpoint declares; a
route without one, or whose path parameters differ from the operation's, is a programming error caught when
the application is built. With a bearer token configured, the lookup operations declare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

ERROR_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "unavailable"]},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                "required": ["ok", "detail"],
            },
        },
    },
    "required": ["status", "checks"],
}


def _health(summary: str) -> dict[str, Any]:
    body = {"content": {"application/json": {"schema": HEALTH_SCHEMA}}}
    return {
        "summary": summary,
        "responses": {"200": {"description": "every check passed", **body}, "503": {"description": "not", **body}},
    }


BUILTIN: dict[str, dict[str, Any]] = {
    "healthz": _health("Liveness: every role's thread is running"),
    "readyz": _health("Readiness: Redis and the broker answer"),
    "metrics": {
        "summary": "Prometheus metrics",
        "responses": {"200": {"description": "the exposition", "content": {"text/plain": {"schema": {}}}}},
    },
}


def lookup_operation(
    id_name: str, max_id_len: int, top_k: int, summary: str, schema: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """One GET lookup: the id in the path, ``k`` in the query, the list (``schema``) or an error back."""
    id_param = {
        "name": id_name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": max_id_len},
    }
    k_param = {
        "name": "k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": top_k, "default": top_k},
    }
    ok = {"description": "the list", "content": {"application/json": {"schema": schema}}}
    responses = {"200": ok, "400": error_response("bad input"), **extra}
    return {"summary": summary, "parameters": [id_param, k_param], "responses": responses}


def _operation(route: Route, operations: dict[str, dict[str, Any]], secured: bool) -> dict[str, Any]:
    if route.name in operations:
        operation = operations[route.name]
        if secured:
            responses = {**operation["responses"], "401": error_response("missing or wrong bearer token")}
            operation = {**operation, "security": [{"bearer": []}], "responses": responses}
    elif route.name in BUILTIN:
        operation = BUILTIN[route.name]
    else:
        raise ValueError(f"route {route.path} ({route.name}) has no OpenAPI operation")
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    if declared != set(route.param_convertors):
        captured = sorted(route.param_convertors)
        raise ValueError(f"route {route.path} captures {captured}, its operation declares {sorted(declared)}")
    return operation


def document(table: Sequence[BaseRoute], operations: dict[str, dict[str, Any]], secured: bool) -> dict[str, Any]:
    """The document of the routes in ``table`` (GET each); lookup operations by route name in ``operations``."""
    paths = {route.path: {"get": _operation(route, operations, secured)} for route in table if isinstance(route, Route)}
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "recd", "version": "1"}, "paths": paths}
    if secured:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    return doc
