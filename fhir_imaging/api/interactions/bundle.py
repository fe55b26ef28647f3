"""batch and transaction: ``POST /`` with a Bundle (https://hl7.org/fhir/R4/http.html#transaction).

The handler reads the Bundle and the ``Prefer`` header; the service runs it (service/bundle.py) in a worker thread.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import bases, caller, endpoint, in_thread, off_loop, read_body, service
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.headers import handling_preference, return_preference
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import parse_resource_json
from fhir_imaging.service.bundle import run_bundle


@endpoint
async def batch_or_transaction(request: Request) -> Response:
    check_content_type(request.headers.get("content-type"))
    body = await read_body(request)
    bundle = await off_loop(len(body), parse_resource_json, body)
    if bundle["resourceType"] != "Bundle":
        raise BadRequest(f"POST to the base takes a Bundle, not a {bundle['resourceType']}", "resourceType")
    prefer = request.headers.get("prefer")
    strict = handling_preference(prefer) == "strict"
    svc = service(request)
    response = await in_thread(
        run_bundle, svc, caller(request), bundle, return_preference(prefer), bases(request), strict
    )
    return fhir_response(request, response)
