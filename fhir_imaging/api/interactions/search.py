"""search: type (``GET /[type]``, ``POST /[type]/_search``), system (``GET /?_type=…``) and Patient compartment
(``GET /Patient/[id]/[type]``). https://hl7.org/fhir/R4/http.html#search, https://hl7.org/fhir/R4/search.html

The handlers gather the parameters (query string, and for POST the form body) into a ``SearchSpec``; the service
parses and runs it and answers a ``searchset`` Bundle (service/search.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    bases,
    caller,
    endpoint,
    in_thread,
    note_returned,
    read_body,
    resource_type_of,
    service,
)
from fhir_imaging.api.headers import handling_preference
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import BadRequest, NotFound, UnsupportedMediaType
from fhir_imaging.fhir.resource import is_valid_id
from fhir_imaging.service.search import SearchSpec, compartment_spec

FORM = "application/x-www-form-urlencoded"


def _strict(request: Request) -> bool:
    return handling_preference(request.headers.get("prefer")) == "strict"


async def _search(request: Request, spec: SearchSpec) -> Response:
    where = bases(request)
    bundle = await in_thread(service(request).search, caller(request), spec, where)
    note_returned(request, lambda: returned_references(bundle, where.url))
    return fhir_response(request, bundle)


def returned_references(bundle: dict[str, Any], base: str) -> list[str]:
    """``Type/id`` of each resource of a searchset (matches and includes), from its ``fullUrl``."""
    prefix = f"{base}/"
    return [entry["fullUrl"].removeprefix(prefix) for entry in bundle.get("entry", ()) if "fullUrl" in entry]


@endpoint
async def search_type(request: Request) -> Response:
    resource_type = resource_type_of(request)
    items = list(request.query_params.multi_items())
    return await _search(request, SearchSpec(resource_type, (resource_type,), items, _strict(request)))


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
    most = service(request).settings.max_search_parameters
    try:  # counts the fields before parsing them
        form = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=most)
    except ValueError:
        raise BadRequest(f"The form holds more than {most} parameters, the most a search may have", "_search") from None
    items = list(request.query_params.multi_items()) + form
    return await _search(request, SearchSpec(resource_type, (resource_type,), items, _strict(request)))


@endpoint
async def search_system(request: Request) -> Response:
    """``GET /?_type=A,B&…``: several types at once (only parameters all of them share); no _type: every type."""
    registry = service(request).registry
    items = list(request.query_params.multi_items())
    named = [name.strip() for _, value in items if _ == "_type" for name in value.split(",") if name.strip()]
    for name in named:
        if not registry.is_resource_type(name):
            raise BadRequest(f"_type: '{name}' is not a resource type", "_type")
    types = tuple(dict.fromkeys(named)) or tuple(sorted(registry.resource_types))
    return await _search(request, SearchSpec("", types, items, _strict(request)))


@endpoint
async def search_compartment(request: Request) -> Response:
    """``GET /Patient/[id]/[type]`` (service/search.py ``compartment_spec``)."""
    registry = service(request).registry
    if request.path_params["type"] != "Patient":
        raise NotFound("Only the Patient compartment is supported", "type")
    patient_id = request.path_params["id"]
    if not is_valid_id(patient_id):
        raise NotFound(f"'{patient_id}' is not a valid resource id", "id")
    resource_type = request.path_params["compartment_type"]
    if not registry.is_resource_type(resource_type):
        raise NotFound(f"Unknown resource type '{resource_type}'", resource_type)
    items = list(request.query_params.multi_items())
    return await _search(request, compartment_spec(registry, patient_id, resource_type, items, _strict(request)))
