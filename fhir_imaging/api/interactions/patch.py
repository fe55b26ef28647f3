"""patch: https://hl7.org/fhir/R4/http.html#patch — JSON Patch (``application/json-patch+json``) or FHIRPath Patch
(a Parameters resource in ``application/fhir+json``). Conditional patch: ``PATCH /[type]?[search]``.

Reading the patch runs in a worker thread, and so does the service's patch (applied within the bounds of
``FhirService.patcher.limits``, validated, written; applied again when another write slips in).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    bases,
    caller,
    endpoint,
    in_thread,
    read_body,
    resource_id_of,
    resource_type_of,
    service,
)
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import written_response
from fhir_imaging.service.conditional import Criteria
from fhir_imaging.service.core import PatchDocument
from fhir_imaging.service.patch import parse_patch_document

JSON_PATCH = "application/json-patch+json"


@endpoint
async def patch(request: Request) -> Response:
    return await _patch(request, resource_type_of(request), resource_id_of(request))


@endpoint
async def conditional_patch(request: Request) -> Response:
    """``PATCH /[type]?[search]``: the one match is patched; none → 404; several → 412."""
    return await _patch(request, resource_type_of(request), list(request.query_params.multi_items()))


async def _patch(request: Request, resource_type: str, target: str | Criteria) -> Response:
    header = request.headers.get("content-type")
    is_json_patch = (header or "").split(";", 1)[0].strip().lower() == JSON_PATCH
    if not is_json_patch:
        check_content_type(header)  # FHIRPath Patch: a Parameters resource in FHIR JSON
    document = await in_thread(parse_patch_document, await read_body(request))
    pinned = if_match(request.headers.get("if-match"))
    svc, where = service(request), bases(request)
    patch_document = PatchDocument(document, is_json_patch)
    written = await in_thread(svc.patch, caller(request), resource_type, target, patch_document, where, pinned)
    return written_response(request, where.url, written, "Patched")
