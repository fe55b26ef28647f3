"""The one place where errors become OperationOutcome responses, and the request log.

Every 4xx/5xx leaves the server as an OperationOutcome (https://hl7.org/fhir/R4/operationoutcome.html). A 500 shows
no stack trace: it is logged with a request id, which the OperationOutcome and the ``X-Request-Id`` header carry.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_imaging.api.formats import FHIR_JSON
from fhir_imaging.api.health import PROBE_PATHS
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import FhirError, Issue, operation_outcome
from fhir_imaging.logs import REQUEST_LOGGER

log = logging.getLogger("fhir_imaging")
request_log = logging.getLogger(REQUEST_LOGGER)

HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}
# On every response: patient data is kept by no cache (a shared proxy's or the browser's), and browsers take the
# declared media type as it is rather than sniffing one (a JSON body is never run as a page or script).
SECURITY_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
_PROCESS_TAG = secrets.token_hex(4)
_REQUEST_NUMBERS = itertools.count(1)
_probe_status: dict[str, int] = {}  # the last status of each probe path (health.py), logged when it changes


def next_request_id() -> str:
    """Unique across processes and restarts (a random tag per process, then a counter), and cheap."""
    return f"{_PROCESS_TAG}-{next(_REQUEST_NUMBERS):x}"


def _outcome_response(request: Request, status: int, issues: list[Issue], headers: dict[str, str]) -> Response:
    return fhir_response(request, operation_outcome(issues), status=status, headers=headers)


async def fhir_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _outcome_response(request, exc.status, exc.issues, exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors: no route (404), wrong method (405)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"No FHIR endpoint at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    code = HTTP_ISSUE_CODES.get(exc.status_code, "processing")
    issue = Issue("error", code, message, ("http.method",) if exc.status_code == 405 else ())
    return _outcome_response(request, exc.status_code, [issue], dict(exc.headers or {}))


def _worth_logging(path: str, status: int) -> bool:
    """Every request but a probe answered as the previous one on its path (a probe every few seconds would drown
    the log: only a change of answer is logged)."""
    if path not in PROBE_PATHS:
        return True
    changed = _probe_status.get(path) != status
    _probe_status[path] = status
    return changed


class RequestLogMiddleware:
    """Give each request an id, log one line per request (method, path, status, ms — never the body; a health probe
    only when its answer changes) and turn anything unhandled into a 500 OperationOutcome carrying the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next_request_id()
        scope["request_id"] = request_id  # for the audit trail (api/context.py)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    *SECURITY_HEADERS,
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed: %s %s", request_id, scope["method"], scope["path"])
            if response_started:
                raise
            issue = Issue("fatal", "exception", f"Internal server error; request id {request_id} is in the server log")
            body = orjson.dumps(operation_outcome([issue]))
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", f"{FHIR_JSON}; charset=utf-8".encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            if _worth_logging(scope["path"], status):
                request_log.info("%s %s %d %.1fms id=%s", scope["method"], scope["path"], status, elapsed, request_id)
