"""update: https://hl7.org/fhir/R4/http.html#update — a new version, or update-as-create with the client's id (201).

The body's id must equal the URL's (else 400); ``If-Match`` makes it a version-aware update (412 when stale).
Conditional update: ``PUT /[type]?[search]``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.conditional import find_one
from fhir_imaging.api.context import (
    base_url,
    check_id_element,
    context,
    endpoint,
    ensure_references,
    in_thread,
    read_resource,
    resource_type_of,
    server_bases,
)
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import write_response
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import is_valid_id, new_id
from fhir_imaging.storage.base import Transaction, WriteResult


@endpoint
async def update(request: Request) -> Response:
    ctx = context(request)
    resource_type = resource_type_of(request)
    resource_id = request.path_params["id"]
    if not is_valid_id(resource_id):
        raise BadRequest(f"'{resource_id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", "id")
    expected_version = if_match(request.headers.get("if-match"))

    def check(resource: dict[str, Any]) -> None:
        check_id_element(resource, resource_id)
        ctx.validate(resource)

    resource = await read_resource(request, resource_type, check)
    base = base_url(request)

    def write(tx: Transaction) -> WriteResult:
        ensure_references(ctx, base, resource, tx)
        return tx.update(resource_type, resource_id, resource, expected_version)

    return _answer(request, base, await in_thread(ctx.store.transact, write))


@endpoint
async def conditional_update(request: Request) -> Response:
    """``PUT /[type]?[search]`` (http.html#cond-update): no match → create (with the body's id, if any); one →
    update it (the body's id, if any, must be its id); several → 412."""
    ctx = context(request)
    resource_type = resource_type_of(request)
    criteria = list(request.query_params.multi_items())
    expected_version = if_match(request.headers.get("if-match"))

    def check(resource: dict[str, Any]) -> None:
        check_id_element(resource, None)
        ctx.validate(resource)

    resource = await read_resource(request, resource_type, check)
    body_id = resource.get("id")
    base, bases = base_url(request), server_bases(request)

    def write(tx: Transaction) -> WriteResult:
        match = find_one(ctx, tx, resource_type, criteria, bases)
        if match is not None and body_id is not None and body_id != match.id:
            raise BadRequest(
                f"The resource id '{body_id}' is not the id of the resource the criteria match ('{match.id}')",
                f"{resource_type}.id",
            )
        target = match.id if match is not None else (body_id or new_id())
        ensure_references(ctx, base, resource, tx)
        return tx.update(resource_type, target, resource, expected_version)

    return _answer(request, base, await in_thread(ctx.store.transact, write))


def _answer(request: Request, base: str, result: WriteResult) -> Response:
    """201 when the write created the resource, else 200 (shaped by ``Prefer``)."""
    version = result.version
    verb = "Created" if result.created else "Updated"
    return write_response(
        request, base, version, 201 if result.created else 200, f"{verb} {version.resource_type}/{version.id}"
    )
