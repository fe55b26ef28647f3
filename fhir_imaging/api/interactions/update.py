"""update: https://hl7.org/fhir/R4/http.html#update — a new version, or update-as-create with the client's id (201).

The body's id must equal the URL's (else 400); ``If-Match`` makes it a version-aware update (412 when stale).
Conditional update: ``PUT /[type]?[search]``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import bases, caller, endpoint, in_thread, read_resource, resource_type_of, service
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import written_response


@endpoint
async def update(request: Request) -> Response:
    resource_type = resource_type_of(request)
    expected_version = if_match(request.headers.get("if-match"))
    resource = await read_resource(request, resource_type)
    svc, where = service(request), bases(request)
    resource_id: str = request.path_params["id"]
    written = await in_thread(svc.update, caller(request), resource_id, resource, where, expected_version)
    return written_response(request, where.url, written)


@endpoint
async def conditional_update(request: Request) -> Response:
    """``PUT /[type]?[search]`` (http.html#cond-update)."""
    resource_type = resource_type_of(request)
    criteria = list(request.query_params.multi_items())
    expected_version = if_match(request.headers.get("if-match"))
    resource = await read_resource(request, resource_type)
    svc, where = service(request), bases(request)
    written = await in_thread(svc.conditional_update, caller(request), criteria, resource, where, expected_version)
    return written_response(request, where.url, written)
