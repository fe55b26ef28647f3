"""The route table: (path, method, handler, FHIR interaction code). The CapabilityStatement reads the same table.

Paths are relative to ``/baseR4``. ``{type}`` matches names starting with a capital letter, ``{id}`` anything not
starting with ``_`` or ``$`` (ids are checked by the interactions, to answer 400 or 404 as fits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send

from fhir_imaging.api.interactions.bundle import batch_or_transaction
from fhir_imaging.api.interactions.capabilities import capabilities
from fhir_imaging.api.interactions.create import create
from fhir_imaging.api.interactions.delete import conditional_delete, delete
from fhir_imaging.api.interactions.export import (
    export_cancel,
    export_file,
    export_group,
    export_patient,
    export_status,
    export_system,
)
from fhir_imaging.api.interactions.history import history_instance, history_system, history_type
from fhir_imaging.api.interactions.patch import conditional_patch, patch
from fhir_imaging.api.interactions.read import read, vread
from fhir_imaging.api.interactions.search import search_compartment, search_system, search_type, search_type_post
from fhir_imaging.api.interactions.smart import jwks, smart_configuration, token
from fhir_imaging.api.interactions.update import conditional_update, update
from fhir_imaging.api.interactions.validate import validate_instance, validate_type

Handler = Callable[[Request], Awaitable[Response]]


class ResourceTypeConvertor(Convertor[str]):
    regex = "[A-Z][A-Za-z]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ResourceIdConvertor(Convertor[str]):
    regex = "[^/_$][^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirtype", ResourceTypeConvertor())
register_url_convertor("fhirid", ResourceIdConvertor())

TYPE = "{type:fhirtype}"
ID = "{id:fhirid}"

# (path, method, handler, interaction code or $operation for the CapabilityStatement; None = neither)
ROUTES: tuple[tuple[str, str, Handler, str | None], ...] = (
    ("/metadata", "GET", capabilities, None),
    ("/.well-known/smart-configuration", "GET", smart_configuration, None),
    ("/auth/token", "POST", token, None),
    ("/auth/jwks", "GET", jwks, None),
    ("/$export", "GET", export_system, None),
    ("/$export", "POST", export_system, None),
    ("/Patient/$export", "GET", export_patient, None),
    ("/Patient/$export", "POST", export_patient, None),
    (f"/Group/{ID}/$export", "GET", export_group, None),
    (f"/Group/{ID}/$export", "POST", export_group, None),
    ("/$export-status/{job}", "GET", export_status, None),
    ("/$export-status/{job}", "DELETE", export_cancel, None),
    ("/$export-file/{job}/{name}", "GET", export_file, None),
    ("/_history", "GET", history_system, "history-system"),
    ("/", "POST", batch_or_transaction, "transaction batch"),
    ("/", "GET", search_system, "search-system"),
    (f"/{TYPE}", "POST", create, "create"),
    (f"/{TYPE}", "GET", search_type, "search-type"),
    (f"/{TYPE}", "PUT", conditional_update, None),
    (f"/{TYPE}", "PATCH", conditional_patch, None),
    (f"/{TYPE}", "DELETE", conditional_delete, None),
    (f"/{TYPE}/_search", "POST", search_type_post, "search-type"),
    (f"/{TYPE}/_history", "GET", history_type, "history-type"),
    (f"/{TYPE}/$validate", "POST", validate_type, "$validate"),
    (f"/{TYPE}/{ID}/$validate", "POST", validate_instance, "$validate"),
    (f"/{TYPE}/{ID}", "GET", read, "read"),
    (f"/{TYPE}/{ID}", "PUT", update, "update"),
    (f"/{TYPE}/{ID}", "PATCH", patch, "patch"),
    (f"/{TYPE}/{ID}", "DELETE", delete, "delete"),
    (f"/{TYPE}/{ID}/_history", "GET", history_instance, "history-instance"),
    (f"/{TYPE}/{ID}/_history/{{vid}}", "GET", vread, "vread"),
    (f"/{TYPE}/{ID}/{{compartment_type:fhirtype}}", "GET", search_compartment, None),
)

INSTANCE_CODES = ("read", "vread", "update", "patch", "delete", "history-instance")
TYPE_CODES = ("history-type", "create", "search-type")


def interaction_codes(level: str) -> list[str]:
    """The interaction codes the routes offer at ``type`` level (instance + type codes) or ``system`` level."""
    offered = {code for *_, codes in ROUTES if codes for code in codes.split()}
    order = (
        INSTANCE_CODES + TYPE_CODES if level == "type" else ("transaction", "batch", "search-system", "history-system")
    )
    return [code for code in order if code in offered]


def operation_names() -> list[str]:
    """The type-level operations the routes offer (``$validate`` → ``validate``)."""
    return sorted({code[1:] for *_, code in ROUTES if code and code.startswith("$")})


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    allow = ", ".join([*handlers, *(["HEAD"] if "GET" in handlers else []), "OPTIONS"])

    async def by_method(request: Request) -> Response:
        if request.method == "OPTIONS":  # RFC 9110 §9.3.7: the methods of this path (CORS preflights never get here)
            return Response(status_code=204, headers={"Allow": allow})
        # Starlette adds HEAD to every GET route: HEAD is answered by the GET handler (the server drops the body).
        handler = handlers.get(request.method) or handlers["GET"]
        return await handler(request)

    return by_method


def _is_type_name(segment: str) -> bool:
    """``ResourceTypeConvertor.regex`` (``[A-Z][A-Za-z]*``) without a regex."""
    return segment[:1].isupper() and segment.isascii() and segment.isalpha()


def _is_id_segment(segment: str) -> bool:
    """``ResourceIdConvertor.regex`` (``[^/_$][^/]*``, within one segment) without a regex."""
    return segment != "" and segment[0] not in "_$"


class FhirRouter(Router):
    """Starlette's router over the routes under the base, with the two hot paths — ``/{type}/{id}`` (read, update,
    patch, delete) and ``/{type}`` (search, create) — found by splitting the path rather than by trying the regex of
    every route in turn. Anything else, and a method those routes do not take, goes through Starlette's matching
    (which answers 404 and 405)."""

    def __init__(self, routes: list[Route], instance_route: Route, type_route: Route) -> None:
        super().__init__(routes=routes)
        self._by_segments = {2: type_route, 3: instance_route}

    def hot_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and path parameters for ``path`` (relative to the base) when it is a hot path."""
        segments = path.split("/")
        route = self._by_segments.get(len(segments))
        if (
            route is None
            or route.methods is None
            or method not in route.methods
            or not _is_type_name(segments[1])
            or (len(segments) == 3 and not _is_id_segment(segments[2]))
        ):
            return None
        return route, ({"type": segments[1]} if len(segments) == 2 else {"type": segments[1], "id": segments[2]})

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot_route(scope["method"], get_route_path(scope)) if scope["type"] == "http" else None
        if hot is None:
            await super().app(scope, receive, send)
            return
        route, params = hot
        # Only the path parameters, which Request.path_params reads. Starlette's matching also records its own
        # bookkeeping in the scope ("router", "route", "endpoint"): nothing here reads it (Request.url_for, its only
        # reader in Starlette besides the opt-in OpenTelemetry middleware, is not used), so the hot paths leave it as
        # the Mount set it.
        scope["path_params"] = {**scope.get("path_params", {}), **params}
        await route.handle(scope, receive, send)


def _route(path: str, handlers: dict[str, Handler]) -> Route:
    """One Starlette route for every method of ``path`` (and OPTIONS, answered by ``_dispatch``)."""
    return Route(path, _dispatch(handlers), methods=[*handlers, "OPTIONS"])


def starlette_routes(base_path: str) -> list[Any]:
    """The routes under ``base_path``: one Starlette route per path, so that a wrong method is a 405 whose Allow
    header lists every method; the base itself answers with and without its trailing slash."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, method, handler, _ in ROUTES:
        by_path.setdefault(path, {})[method] = handler
    routes = {path: _route(path, handlers) for path, handlers in by_path.items()}
    router = FhirRouter(list(routes.values()), instance_route=routes[f"/{TYPE}/{ID}"], type_route=routes[f"/{TYPE}"])
    root = [_route(base_path, by_path["/"])] if "/" in by_path else []
    return [*root, Mount(base_path, app=router)]
