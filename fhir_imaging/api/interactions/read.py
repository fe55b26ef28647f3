"""read and vread: https://hl7.org/fhir/R4/http.html#read, #vread, #cread (If-None-Match, If-Modified-Since)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    bases,
    caller,
    endpoint,
    read_quickly,
    resource_id_of,
    resource_type_of,
    service,
    version_id_of,
)
from fhir_imaging.api.headers import none_match, not_modified_since
from fhir_imaging.api.rendering import fhir_response, version_headers
from fhir_imaging.fhir.outcome import Gone


@endpoint
async def read(request: Request) -> Response:
    resource_type, resource_id = resource_type_of(request), resource_id_of(request)
    svc = service(request)
    where = bases(request)
    who = caller(request)
    version = await svc.read_async(who, resource_type, resource_id, where)
    if version is None:  # granular scopes: the read is a search
        version = await read_quickly(request, svc.read, who, resource_type, resource_id, where)
    headers = version_headers(where.url, version)
    if version.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted (version {version.version})", headers=headers)
    if none_match(request.headers.get("if-none-match"), version.version) or not_modified_since(
        request.headers.get("if-modified-since"), version.last_updated
    ):
        return Response(status_code=304, headers=headers)
    return fhir_response(request, version.body, headers=headers)


@endpoint
async def vread(request: Request) -> Response:
    resource_type, resource_id = resource_type_of(request), resource_id_of(request)
    number = version_id_of(request)
    svc = service(request)
    where = bases(request)
    version = await read_quickly(request, svc.vread, caller(request), resource_type, resource_id, number, where)
    headers = version_headers(where.url, version)
    if version.deleted:
        raise Gone(f"Version {number} of {resource_type}/{resource_id} is its deletion", headers=headers)
    return fhir_response(request, version.body, headers=headers)
