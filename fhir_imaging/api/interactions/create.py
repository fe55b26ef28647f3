"""create: https://hl7.org/fhir/R4/http.html#create — the server assigns the id; any id in the body is ignored.

Conditional create (``If-None-Exist: [search parameters]``, http.html#ccreate): no match → create (201); one match →
nothing is written and the existing resource is returned (200); several → 412.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import bases, caller, endpoint, in_thread, read_resource, resource_type_of, service
from fhir_imaging.api.rendering import written_response


@endpoint
async def create(request: Request) -> Response:
    resource_type = resource_type_of(request)
    resource = await read_resource(request, resource_type)
    svc, where = service(request), bases(request)
    criteria = request.headers.get("if-none-exist")
    written = await in_thread(svc.create, caller(request), resource, where, criteria)
    return written_response(request, where.url, written)
