"""Writing FHIR JSON responses: stored bytes served as they are, ``_pretty``, the negotiated media type, and
the version headers (ETag, Last-Modified, Location, Content-Location).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.formats import FHIR_JSON
from fhir_imaging.api.headers import return_preference
from fhir_imaging.fhir.outcome import Issue, operation_outcome
from fhir_imaging.fhir.resource import etag, http_date
from fhir_imaging.service import Written
from fhir_imaging.storage.base import Version


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def fhir_response(
    request: Request, content: bytes | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response holding ``content`` (stored JSON bytes or a dict) in the negotiated JSON media type."""
    media_type = getattr(request.state, "media_type", FHIR_JSON)
    if content is None:
        return Response(status_code=status, headers=headers)
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    if _pretty(request):
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return Response(body, status_code=status, headers=headers, media_type=f"{media_type}; charset=utf-8")


def version_headers(base: str, version: Version) -> dict[str, str]:
    """ETag and Last-Modified of a version, and Content-Location (its versioned URL)."""
    return {
        "ETag": etag(version.version),
        "Last-Modified": http_date(version.last_updated),
        "Content-Location": f"{base}/{version.resource_type}/{version.id}/_history/{version.version}",
    }


def write_response(request: Request, base: str, version: Version, status: int, message: str) -> Response:
    """The answer to a create or update, shaped by ``Prefer: return=…``."""
    headers = version_headers(base, version)
    if status == 201:
        headers["Location"] = headers["Content-Location"]
    preference = return_preference(request.headers.get("prefer"))
    if preference == "minimal":
        return fhir_response(request, None, status, headers)
    if preference == "OperationOutcome":
        outcome = operation_outcome([Issue("information", "informational", message)])
        return fhir_response(request, outcome, status, headers)
    return fhir_response(request, version.body, status, headers)


def written_response(request: Request, base: str, written: Written, verb: str | None = None) -> Response:
    """The answer to a create, update or patch: 201 when it made the resource, else 200. ``verb`` names what was
    done in a ``return=OperationOutcome`` message (default: Created / Updated)."""
    version = written.version
    name = f"{version.resource_type}/{version.id}"
    if written.matched:
        return write_response(request, base, version, 200, f"{name} already matches")
    status = 201 if written.created else 200
    return write_response(
        request, base, version, status, f"{verb or ('Created' if written.created else 'Updated')} {name}"
    )
