"""update: https://hl7.org/fhir/R4/http.html#update — a new version, or update-as-create with the client's id (201).

The body's id must equal the URL's (else 400); ``If-Match`` makes it a version-aware update (412 when stale).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    base_url,
    check_id_element,
    context,
    endpoint,
    ensure_references,
    in_thread,
    read_resource,
    resource_type_of,
)
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import write_response
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import is_valid_id
from fhir_imaging.storage.base import Transaction, WriteResult


@endpoint
async def update(request: Request) -> Response:
    ctx = context(request)
    resource_type = resource_type_of(request)
    resource_id = request.path_params["id"]
    if not is_valid_id(resource_id):
        raise BadRequest(f"'{resource_id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", "id")
    expected_version = if_match(request.headers.get("if-match"))
    resource = await read_resource(request, resource_type)
    check_id_element(resource, resource_id)
    ctx.validate(resource)
    base = base_url(request)

    def write(tx: Transaction) -> WriteResult:
        ensure_references(ctx, base, resource, tx)
        return tx.update(resource_type, resource_id, resource, expected_version)

    result = await in_thread(ctx.store.transact, write)
    status = 201 if result.created else 200
    verb = "Created" if result.created else "Updated"
    return write_response(request, base, result.version, status, f"{verb} {resource_type}/{resource_id}")
