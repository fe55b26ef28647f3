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
from starlette.routing import Mount, Route

from fhir_imaging.api.interactions.bundle import batch_or_transaction
from fhir_imaging.api.interactions.capabilities import capabilities
from fhir_imaging.api.interactions.create import create
from fhir_imaging.api.interactions.delete import conditional_delete, delete
from fhir_imaging.api.interactions.history import history_instance, history_system, history_type
from fhir_imaging.api.interactions.patch import conditional_patch, patch
from fhir_imaging.api.interactions.read import read, vread
from fhir_imaging.api.interactions.search import search_compartment, search_system, search_type, search_type_post
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
    async def by_method(request: Request) -> Response:
        # Starlette adds HEAD to every GET route: HEAD is answered by the GET handler (the server drops the body).
        handler = handlers.get(request.method) or handlers["GET"]
        return await handler(request)

    return by_method


def starlette_routes(base_path: str) -> list[Any]:
    """The routes under ``base_path``: one Starlette route per path, so that a wrong method is a 405 whose Allow
    header lists every method; the base itself answers with and without its trailing slash."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, method, handler, _ in ROUTES:
        by_path.setdefault(path, {})[method] = handler
    routes: list[Any] = [Route(path, _dispatch(handlers), methods=list(handlers)) for path, handlers in by_path.items()]
    root = [Route(base_path, _dispatch(by_path["/"]), methods=list(by_path["/"]))] if "/" in by_path else []
    return [*root, Mount(base_path, routes=routes)]
