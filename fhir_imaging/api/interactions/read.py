"""read and vread: https://hl7.org/fhir/R4/http.html#read, #vread, #cread (If-None-Match, If-Modified-Since)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    base_url,
    context,
    endpoint,
    read_quickly,
    resource_id_of,
    resource_type_of,
    version_id_of,
)
from fhir_imaging.api.headers import none_match, not_modified_since
from fhir_imaging.api.rendering import fhir_response, version_headers
from fhir_imaging.fhir.outcome import Gone, NotFound


@endpoint
async def read(request: Request) -> Response:
    resource_type, resource_id = resource_type_of(request), resource_id_of(request)
    ctx = context(request)
    version = await read_quickly(ctx, ctx.store.read, resource_type, resource_id)
    if version is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
    headers = version_headers(base_url(request), version)
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
    ctx = context(request)
    version = await read_quickly(ctx, ctx.store.vread, resource_type, resource_id, number)
    if version is None:
        if await read_quickly(ctx, ctx.store.read, resource_type, resource_id) is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
        raise NotFound(f"{resource_type}/{resource_id} has no version {number}", "vid")
    headers = version_headers(base_url(request), version)
    if version.deleted:
        raise Gone(f"Version {number} of {resource_type}/{resource_id} is its deletion", headers=headers)
    return fhir_response(request, version.body, headers=headers)
