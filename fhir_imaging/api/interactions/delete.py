"""delete: https://hl7.org/fhir/R4/http.html#delete — history keeps every version; later reads answer 410.

Deleting a resource that does not exist, or is already deleted, succeeds without a new version (200).
Conditional delete: ``DELETE /[type]?[search]``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import bases, caller, endpoint, in_thread, resource_id_of, resource_type_of, service
from fhir_imaging.api.headers import if_match
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import Issue, operation_outcome
from fhir_imaging.fhir.resource import etag


@endpoint
async def delete(request: Request) -> Response:
    resource_type, resource_id = resource_type_of(request), resource_id_of(request)
    expected_version = if_match(request.headers.get("if-match"))
    svc = service(request)
    version = await in_thread(svc.delete, caller(request), resource_type, resource_id, bases(request), expected_version)
    if version is None:
        message = f"Nothing to delete: {resource_type}/{resource_id} does not exist or is already deleted"
        return fhir_response(request, operation_outcome([Issue("information", "informational", message)]))
    message = f"Deleted {resource_type}/{resource_id} (version {version.version})"
    outcome = operation_outcome([Issue("information", "informational", message)])
    return fhir_response(request, outcome, headers={"ETag": etag(version.version)})


@endpoint
async def conditional_delete(request: Request) -> Response:
    """``DELETE /[type]?[search]`` (http.html#cdelete)."""
    resource_type = resource_type_of(request)
    criteria = list(request.query_params.multi_items())
    svc = service(request)
    deleted = await in_thread(svc.conditional_delete, caller(request), resource_type, criteria, bases(request))
    names = ", ".join(f"{resource_type}/{version.id}" for version in deleted)
    message = f"Deleted {len(deleted)} resource(s){': ' + names if names else ''}"
    return fhir_response(request, operation_outcome([Issue("information", "informational", message)]))
