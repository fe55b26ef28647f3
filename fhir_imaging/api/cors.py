"""Cross-origin requests (CORS), allowed only for the origins named by the ``cors_origin`` setting.

Without it the server sends no ``Access-Control-*`` header, so a web page of another origin can neither read an answer
nor send a request that needs a preflight (every write: a FHIR body is never a "simple" request, see
``formats.check_content_type``). With it, those origins may use the whole API from a browser; a preflight from any
other origin is refused with an OperationOutcome.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from fhir_imaging.api.formats import FHIR_JSON
from fhir_imaging.fhir.outcome import Issue, operation_outcome

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REQUEST_HEADERS = (
    "Accept",
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-Modified-Since",
    "If-None-Exist",
    "If-None-Match",
    "Prefer",
    "X-Consistency-Token",
)
RESPONSE_HEADERS = ("Content-Location", "ETag", "Last-Modified", "Location", "X-Consistency-Token", "X-Request-Id")


def parse_origins(text: str) -> tuple[str, ...]:
    """``https://a.example, https://b.example`` → the origins, without trailing slashes; ``*`` means any origin."""
    return tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())


class FhirCorsMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflights answer an OperationOutcome, not plain text."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_methods=list(METHODS),
            allow_headers=list(REQUEST_HEADERS),
            expose_headers=list(RESPONSE_HEADERS),
            allow_credentials=False,
            max_age=600,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        issue = Issue("error", "forbidden", f"CORS preflight refused: {bytes(response.body).decode(errors='replace')}")
        headers = {key: value for key, value in response.headers.items() if key.startswith("access-control-")}
        return Response(
            orjson.dumps(operation_outcome([issue])),
            status_code=response.status_code,
            headers=headers,
            media_type=f"{FHIR_JSON}; charset=utf-8",
        )
