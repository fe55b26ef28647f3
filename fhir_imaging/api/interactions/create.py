"""create: https://hl7.org/fhir/R4/http.html#create — the server assigns the id; any id in the body is ignored.

Conditional create (``If-None-Exist: [search parameters]``, http.html#ccreate): no match → create (201); one match →
nothing is written and the existing resource is returned (200); several → 412.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.conditional import find_one
from fhir_imaging.api.context import (
    base_url,
    context,
    endpoint,
    ensure_references,
    in_thread,
    read_resource,
    resource_type_of,
    server_bases,
)
from fhir_imaging.api.rendering import write_response
from fhir_imaging.fhir.resource import new_id
from fhir_imaging.storage.base import Transaction, Version


@endpoint
async def create(request: Request) -> Response:
    ctx = context(request)
    resource_type = resource_type_of(request)
    criteria = request.headers.get("if-none-exist")

    def check(resource: dict[str, Any]) -> None:
        resource.pop("id", None)  # a create ignores the body's id
        ctx.validate(resource)

    resource = await read_resource(request, resource_type, check)
    base, bases = base_url(request), server_bases(request)

    def write(tx: Transaction) -> tuple[Version, bool]:
        if criteria:
            existing = find_one(ctx, tx, resource_type, criteria, bases, "If-None-Exist")
            if existing is not None:
                return existing, False
        ensure_references(ctx, base, resource, tx)
        return tx.create(resource_type, new_id(), resource).version, True

    version, created = await in_thread(ctx.store.transact, write)
    if not created:
        return write_response(request, base, version, 200, f"{resource_type}/{version.id} already matches")
    return write_response(request, base, version, 201, f"Created {resource_type}/{version.id}")
