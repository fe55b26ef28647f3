"""search: type (``GET /[type]``, ``POST /[type]/_search``), system (``GET /?_type=…``) and Patient compartment
(``GET /Patient/[id]/[type]``). https://hl7.org/fhir/R4/http.html#search, https://hl7.org/fhir/R4/search.html

The query string (and, for POST, the form body) is parsed into a typed search (search/query.py), run against the
store (search/execute.py) and answered with a ``searchset`` Bundle whose ``self`` link shows the search as performed
and whose ``next`` / ``previous`` links carry a stateless keyset cursor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    Context,
    base_url,
    context,
    endpoint,
    in_thread,
    read_body,
    resource_type_of,
    server_bases,
)
from fhir_imaging.api.headers import handling_preference
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.bundle import searchset_bundle
from fhir_imaging.fhir.outcome import BadRequest, Issue, NotFound, UnsupportedMediaType
from fhir_imaging.fhir.resource import is_valid_id
from fhir_imaging.search.execute import Hit, run_search
from fhir_imaging.search.paging import CURSOR
from fhir_imaging.search.query import Compartment, Filter, SearchRequest, parse_search
from fhir_imaging.search.shape import shape
from fhir_imaging.storage.base import Version

FORM = "application/x-www-form-urlencoded"


def _version(hit: Hit, search: SearchRequest) -> Version:
    body = hit.body
    if search.summary or search.elements is not None:
        shaped = shape(orjson.loads(body), search.summary, search.elements)
        if shaped is not None:
            body = orjson.dumps(shaped)
    return Version(hit.resource_type, hit.id, hit.version, hit.last_updated, "", body)


def search_bundle(
    ctx: Context,
    path: str,
    types: tuple[str, ...],
    items: list[tuple[str, str]],
    base: str,
    bases: tuple[str, ...],
    strict: bool,
    extra: tuple[Filter, ...] = (),
) -> dict[str, Any]:
    """Parse, run and answer one search as a ``searchset`` Bundle (blocking: call it off the event loop)."""
    search = parse_search(
        ctx.registry,
        types,
        items,
        strict=strict,
        default_count=ctx.settings.default_count,
        max_count=ctx.settings.max_count,
        extra=extra,
        limits=ctx.search_limits,
    )
    result = run_search(ctx.store, search, bases, max_include=ctx.settings.max_include)
    url = f"{base}/{path}" if path else base
    performed = list(search.performed)

    def link(cursor: str | None) -> str:
        pairs = performed + ([(CURSOR, cursor)] if cursor else [])
        return f"{url}?{urlencode(pairs)}" if pairs else url

    links = {"self": link(search.cursor)}
    if search.cursor:
        links["first"] = link(None)
    if result.previous_cursor:
        links["previous"] = link(result.previous_cursor)
    if result.next_cursor:
        links["next"] = link(result.next_cursor)
    total = None if search.total == "none" else result.total
    return searchset_bundle(
        base,
        [_version(hit, search) for hit in result.matches],
        links,
        total,
        [_version(hit, search) for hit in result.included],
        _include_warning(search, ctx.settings.max_include) if result.included_capped else (),
    )


def _include_warning(search: SearchRequest, most: int) -> list[Issue]:
    names = sorted({"_revinclude" if include.reverse else "_include" for include in search.includes})
    message = (
        f"{' and '.join(names)} found more than {most} resources for this page: only {most} are included "
        "(ask for smaller pages with _count to get them all)"
    )
    return [Issue("warning", "too-costly", message, tuple(names))]


async def _search(
    request: Request, path: str, types: tuple[str, ...], items: list[tuple[str, str]], extra: tuple[Filter, ...] = ()
) -> Response:
    ctx = context(request)
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    bundle = await in_thread(
        search_bundle, ctx, path, types, items, base_url(request), server_bases(request), strict, extra
    )
    return fhir_response(request, bundle)


@endpoint
async def search_type(request: Request) -> Response:
    resource_type = resource_type_of(request)
    return await _search(request, resource_type, (resource_type,), list(request.query_params.multi_items()))


@endpoint
async def search_type_post(request: Request) -> Response:
    """``POST /[type]/_search``: the form-encoded body's parameters join the query string's."""
    resource_type = resource_type_of(request)
    body = await read_body(request)
    if body:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != FORM:
            raise UnsupportedMediaType(
                f"POST _search takes {FORM}, not {content_type or 'no Content-Type'}", "Content-Type"
            )
    most = context(request).settings.max_search_parameters
    try:  # counts the fields before parsing them
        form = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=most)
    except ValueError:
        raise BadRequest(f"The form holds more than {most} parameters, the most a search may have", "_search") from None
    items = list(request.query_params.multi_items()) + form
    return await _search(request, resource_type, (resource_type,), items)


@endpoint
async def search_system(request: Request) -> Response:
    """``GET /?_type=A,B&…``: several types at once (only parameters all of them share); no _type: every type."""
    registry = context(request).registry
    items = list(request.query_params.multi_items())
    named = [name.strip() for _, value in items if _ == "_type" for name in value.split(",") if name.strip()]
    for name in named:
        if not registry.is_resource_type(name):
            raise BadRequest(f"_type: '{name}' is not a resource type", "_type")
    types = tuple(dict.fromkeys(named)) or tuple(sorted(registry.resource_types))
    return await _search(request, "", types, items)


@endpoint
async def search_compartment(request: Request) -> Response:
    """``GET /Patient/[id]/[type]``: ``[type]?patient=Patient/[id]`` through every parameter of the Patient
    CompartmentDefinition for that type (whether or not the Patient exists), plus any other parameters."""
    registry = context(request).registry
    if request.path_params["type"] != "Patient":
        raise NotFound("Only the Patient compartment is supported", "type")
    patient_id = request.path_params["id"]
    if not is_valid_id(patient_id):
        raise NotFound(f"'{patient_id}' is not a valid resource id", "id")
    resource_type = request.path_params["compartment_type"]
    if not registry.is_resource_type(resource_type):
        raise NotFound(f"Unknown resource type '{resource_type}'", resource_type)
    searchable = {param.code for param in registry.searchable_params(resource_type)}
    codes = tuple(code for code in registry.patient_compartment.get(resource_type, ()) if code in searchable)
    if not codes:
        raise NotFound(f"{resource_type} is not in the Patient compartment", resource_type)
    items = list(request.query_params.multi_items())
    path = f"Patient/{patient_id}/{resource_type}"
    return await _search(request, path, (resource_type,), items, (Compartment(codes, patient_id),))
