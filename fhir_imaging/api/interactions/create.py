"""create: https://hl7.org/fhir/R4/http.html#create — the server assigns the id; any id in the body is ignored."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    base_url,
    context,
    endpoint,
    ensure_references,
    in_thread,
    read_resource,
    resource_type_of,
)
from fhir_imaging.api.rendering import write_response
from fhir_imaging.fhir.outcome import NotSupported
from fhir_imaging.fhir.resource import new_id
from fhir_imaging.storage.base import Transaction, WriteResult


@endpoint
async def create(request: Request) -> Response:
    ctx = context(request)
    resource_type = resource_type_of(request)
    if request.headers.get("if-none-exist"):
        raise NotSupported("Conditional create (If-None-Exist) is not supported yet", "If-None-Exist")
    resource = await read_resource(request, resource_type)
    resource.pop("id", None)
    ctx.validate(resource)
    base = base_url(request)

    def write(tx: Transaction) -> WriteResult:
        ensure_references(ctx, base, resource, tx)
        return tx.create(resource_type, new_id(), resource)

    version = (await in_thread(ctx.store.transact, write)).version
    return write_response(request, base, version, 201, f"Created {resource_type}/{version.id}")
