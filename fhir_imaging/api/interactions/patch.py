"""patch: https://hl7.org/fhir/R4/http.html#patch — JSON Patch (``application/json-patch+json``) or FHIRPath Patch
(a Parameters resource in ``application/fhir+json``).

The patched resource is validated like any update and stored as a new version. The patch applies to the version
read: when another write slips in between, it is applied again to the newer version (a few times at most), unless
the client pinned a version with ``If-Match`` (then 412). Conditional patch: ``PATCH /[type]?[search]``.

Reading the patch, applying it and validating the result run in a worker thread, within the bounds of
``Context.patcher.limits``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.conditional import find_one
from fhir_imaging.api.context import (
    Context,
    base_url,
    context,
    endpoint,
    ensure_references,
    in_thread,
    read_body,
    resource_id_of,
    resource_type_of,
    server_bases,
)
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import write_response
from fhir_imaging.fhir.outcome import Gone, NotFound, PreconditionFailed, Unprocessable
from fhir_imaging.fhir.patch import apply_json_patch, parse_patch_document
from fhir_imaging.storage.base import Transaction, WriteResult

JSON_PATCH = "application/json-patch+json"
ATTEMPTS = 5


def _patched(
    ctx: Context, resource_type: str, resource_id: str, body: bytes | None, document: Any, json: bool
) -> dict[str, Any]:
    """The stored ``body`` patched by ``document`` and validated (blocking: run in a worker thread)."""
    resource = orjson.loads(body or b"{}")
    if json:
        patched = apply_json_patch(resource, document, ctx.patcher.limits)
    else:
        patched = ctx.patcher.apply(resource, document)
    if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise Unprocessable("A patch may not change the resourceType or the id", f"{resource_type}.id")
    ctx.validate(patched)
    return patched


@endpoint
async def patch(request: Request) -> Response:
    return await _patch(request, resource_type_of(request), resource_id_of(request))


@endpoint
async def conditional_patch(request: Request) -> Response:
    """``PATCH /[type]?[search]``: the one match is patched; none → 404; several → 412."""
    ctx = context(request)
    resource_type = resource_type_of(request)
    criteria = list(request.query_params.multi_items())
    bases = server_bases(request)
    match = await in_thread(ctx.store.transact, lambda tx: find_one(ctx, tx, resource_type, criteria, bases))
    if match is None:
        raise NotFound(f"No {resource_type} matches the criteria", "url")
    return await _patch(request, resource_type, match.id)


async def _patch(request: Request, resource_type: str, resource_id: str) -> Response:
    ctx = context(request)
    header = request.headers.get("content-type")
    is_json_patch = (header or "").split(";", 1)[0].strip().lower() == JSON_PATCH
    if not is_json_patch:
        check_content_type(header)  # FHIRPath Patch: a Parameters resource in FHIR JSON
    document = await in_thread(parse_patch_document, await read_body(request))
    pinned = if_match(request.headers.get("if-match"))
    base = base_url(request)
    for _ in range(ATTEMPTS):
        current = await in_thread(ctx.store.read, resource_type, resource_id)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
        if current.body is None:
            raise Gone(f"{resource_type}/{resource_id} was deleted")
        if pinned is not None and pinned != current.version:
            raise PreconditionFailed(
                f"If-Match asked for version {pinned} of {resource_type}/{resource_id}, but the server has version "
                f"{current.version}",
                "If-Match",
            )
        patched = await in_thread(_patched, ctx, resource_type, resource_id, current.body, document, is_json_patch)

        def write(tx: Transaction, patched: dict[str, Any] = patched, expected: int = current.version) -> WriteResult:
            ensure_references(ctx, base, patched, tx)
            return tx.update(resource_type, resource_id, patched, expected)

        try:
            result = await in_thread(ctx.store.transact, write)
        except PreconditionFailed:
            if pinned is not None:
                raise
            continue
        return write_response(request, base, result.version, 200, f"Patched {resource_type}/{resource_id}")
    raise PreconditionFailed(f"{resource_type}/{resource_id} kept changing while the patch was applied; try again")
