"""What every interaction needs from the running server (the service, who is asking, where the request came in),
and the request helpers: path parameters, the body, work off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.formats import FHIR_JSON, check_content_type, negotiate
from fhir_imaging.audit import audit_event
from fhir_imaging.audit_log import AuditLog
from fhir_imaging.fhir.outcome import BadRequest, FhirError, NotFound, PayloadTooLarge, Unauthorized, error
from fhir_imaging.fhir.resource import is_ascii_digits, is_valid_id, parse_resource_json, parse_whole_number
from fhir_imaging.service import ANONYMOUS, Bases, Caller, FhirService

if TYPE_CHECKING:
    from fhir_imaging.auth.authenticators import Authenticators

BASE_PATH = "/baseR4"
log = logging.getLogger("fhir_imaging.audit")
T = TypeVar("T")


def service(request: Request) -> FhirService:
    found: FhirService = request.app.state.service
    return found


def caller(request: Request) -> Caller:
    """Who is asking, as ``endpoint`` identified the request's caller."""
    found: Caller = request.state.caller
    return found


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking work (database access) off the event loop."""
    return await anyio.to_thread.run_sync(function, *args)


async def read_quickly(request: Request, function: Callable[..., T], *args: Any) -> T:
    """A point read: on the event loop when the store's reads are local and short (SQLite: tens of microseconds,
    less than the hop to a worker thread), else on a thread of the app's ``read_threads`` (PostgreSQL: a network
    round trip). A plain executor hop costs less than ``in_thread`` (anyio's capacity limiter and cancel scope
    around each call); the context (a replica session) goes along, as anyio's would."""
    if service(request).store.reads_inline:
        return function(*args)
    threads: ThreadPoolExecutor | None = request.app.state.read_threads
    if threads is None:
        return await anyio.to_thread.run_sync(function, *args)
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(threads, context.run, function, *args)


def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an interaction: negotiate the response format, then identify the caller (with ``--auth-issuer`` or
    ``--auth-introspection-url``: from the bearer token, else 401) before anything else is done."""
    return _wrap(handler, public=False)


def public_endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap what anyone may ask for, token or not (the CapabilityStatement, the SMART configuration)."""
    return _wrap(handler, public=True)


def file_endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap the download of a file that is not FHIR JSON (a bulk export's NDJSON): like ``endpoint``, but whatever
    the Accept header says (an error is answered as FHIR JSON)."""
    return _wrap(handler, public=False, negotiated=False)


def _wrap(
    handler: Callable[[Request], Awaitable[Response]], public: bool, negotiated: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    interaction = _INTERACTIONS.get(handler.__name__, "operation")

    async def wrapped(request: Request) -> Response:
        if negotiated:
            format_param = request.query_params.get("_format") if request.scope["query_string"] else None
            request.state.media_type = negotiate(request.headers.get("accept"), format_param)
        else:
            request.state.media_type = FHIR_JSON
        if not public:
            audit: AuditLog | None = request.app.state.audit
            if audit is not None:
                return await _audited(request, handler, interaction, audit)
            verifier: Authenticators | None = request.app.state.verifier
            request.state.caller = ANONYMOUS if verifier is None else await _authenticate(request, verifier)
        return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# The FHIR interaction (http://hl7.org/fhir/restful-interaction) each handler serves, for the audit trail.
# batch_or_transaction is refined by its answer's Bundle type (``_event``); anything not named is an operation.
_INTERACTIONS = {
    "read": "read",
    "vread": "vread",
    "update": "update",
    "conditional_update": "update",
    "patch": "patch",
    "conditional_patch": "patch",
    "delete": "delete",
    "conditional_delete": "delete",
    "history_instance": "history-instance",
    "history_type": "history-type",
    "history_system": "history-system",
    "create": "create",
    "search_type": "search-type",
    "search_type_post": "search-type",
    "search_system": "search-system",
    "search_compartment": "search-type",  # a type search within a compartment (R4 has no code of its own)
    "batch_or_transaction": "transaction",
}
_WITH_QUERY = frozenset({"search-type", "search-system"})
_CONDITIONAL = frozenset({"conditional_update", "conditional_patch", "conditional_delete"})


async def _audited(
    request: Request, handler: Callable[[Request], Awaitable[Response]], interaction: str, audit: AuditLog
) -> Response:
    """Identify the caller and run the handler, as ``_wrap`` does, then record the AuditEvent of what was answered:
    the response's status, the ``FhirError``'s (a refusal), 500 for anything else, none when cancelled."""
    status: int | None = None
    response: Response | None = None
    try:
        verifier: Authenticators | None = request.app.state.verifier
        request.state.caller = ANONYMOUS if verifier is None else await _authenticate(request, verifier)
        response = await handler(request)
        status = response.status_code
        return response
    except FhirError as exc:
        status = exc.status
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", 500)  # Starlette's HTTPException keeps its status; anything else: 500
        raise
    finally:
        try:
            audit.record(_event(request, handler.__name__, interaction, status, response))
        except Exception:  # the audit trail never turns an answer into an error
            log.exception("audit event of %s not recorded", interaction)


def _event(
    request: Request, name: str, interaction: str, status: int | None, response: Response | None
) -> dict[str, Any]:
    """The AuditEvent of one answered request: references from the path (or, for a write, the version the answer's
    Content-Location names) and those a search or history returned (``note_returned``), a search's or conditional
    interaction's query as a URL relative to the base, never a body."""
    scope = request.scope
    who: Caller | None = getattr(request.state, "caller", None)
    params = scope.get("path_params", {})
    headers = response.headers if response is not None else None
    references: list[str] = []
    written = headers.get("content-location") if headers is not None else None
    if written and "/_history/" in written:
        references.append("/".join(written.rsplit("/", 4)[1:]))
    elif "id" in params and name != "search_compartment":
        vid = params.get("vid")
        references.append(f"{params['type']}/{params['id']}" + (f"/_history/{vid}" if vid else ""))
    query = None
    if interaction in _WITH_QUERY or name in _CONDITIONAL:
        path = scope["path"].removeprefix(BASE_PATH).lstrip("/")
        query = f"{path}?{scope['query_string'].decode('latin-1')}"
    if name == "search_compartment":
        references.append(f"{params['type']}/{params['id']}")
    references.extend(getattr(request.state, "returned", ()))
    if interaction == "transaction" and b"batch-response" in getattr(response, "body", b"")[:200]:
        interaction = "batch"  # the answer's Bundle type, near its start: the request's Bundle is never looked at
    patient = who.access.patient if who is not None and who.access is not None else None
    client = scope.get("client")
    return audit_event(
        interaction,
        status,
        "unknown" if who is None else who.name,
        client_id=who.client_id if who is not None else None,
        address=client[0] if client else None,
        patient=patient,
        references=references,
        query=query,
        request_id=scope.get("request_id"),
    )


def note_returned(request: Request, references: Callable[[], list[str]]) -> None:
    """For the audit trail (only when one is kept): the resources a search or history answered with, as
    ``Type/id`` (``Type/id/_history/n`` for versions)."""
    if request.app.state.audit is not None:
        request.state.returned = references()


async def _authenticate(request: Request, verifier: Authenticators) -> Caller:
    """The caller a request's bearer token names (a token verified before: on the event loop; else in a worker
    thread, which may fetch the issuer's keys or ask its introspection endpoint); 401 without a valid one."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("This server needs an access token: Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be 'Bearer <token>'")
    principal = verifier.cached(token)
    if principal is None:
        principal = await in_thread(verifier.verify, token)
    queries = service(request).grant_queries  # reads the queries of granular scopes, each once
    return Caller(principal.subject, access=principal.access, client_id=principal.client_id, queries=queries)


_REQUEST_BASES: dict[tuple[object, ...], str] = {}
_MOST_REQUEST_BASES = 256  # Host headers come from clients: the memo of their bases is bounded


def request_base(request: Request) -> str:
    """This server's base URL as the request reached it (scheme, Host, /baseR4). Memoised by what Starlette builds
    it from — building ``request.url`` parses the Host header and assembles the whole URL on every request."""
    scope = request.scope
    host = next((value for key, value in scope["headers"] if key == b"host"), None)
    server = scope.get("server")
    key = (scope.get("scheme"), host, tuple(server) if server else None)
    base = _REQUEST_BASES.get(key)
    if base is None:
        base = f"{request.url.scheme}://{request.url.netloc}{BASE_PATH}"
        if len(_REQUEST_BASES) >= _MOST_REQUEST_BASES:
            _REQUEST_BASES.clear()
        _REQUEST_BASES[key] = base
    return base


def base_url(request: Request) -> str:
    public = service(request).settings.public_url
    if public:
        return public.rstrip("/")
    return request_base(request)


def bases(request: Request) -> Bases:
    """Where the request came in: the base written into links, and what a reference's base may be to point at this
    server: '' (relative), the public URL, the request's base."""
    return Bases.of(base_url(request), request_base(request))


def resource_type_of(request: Request) -> str:
    name: str = request.path_params["type"]
    if not service(request).registry.is_resource_type(name):
        raise NotFound(f"Unknown resource type '{name}': not an R4 resource type served here", name)
    return name


def resource_id_of(request: Request) -> str:
    resource_id: str = request.path_params["id"]
    if not is_valid_id(resource_id):
        raise NotFound(f"'{resource_id}' is not a valid resource id, so no such resource exists", "id")
    return resource_id


def version_id_of(request: Request) -> int:
    text: str = request.path_params["vid"]
    version = parse_whole_number(text)
    if version is None:
        raise NotFound(f"'{text[:40]}' is not a version id of this server (versions are 1, 2, 3…)", "vid")
    return version


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The request body, refusing (413) anything over the configured size (or ``limit``) before reading it all, and
    (408) one that takes more than the configured time to arrive."""
    settings = service(request).settings
    limit = settings.max_body_size if limit is None else limit
    declared = request.headers.get("content-length")
    if declared and is_ascii_digits(declared) and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"The request body of {declared} bytes is over the limit of {limit} bytes")
    timeout = settings.body_timeout
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        message = f"The request body did not arrive within {timeout:g} seconds"
        raise FhirError(issues=[error("timeout", message)], status=408, headers={"Connection": "close"}) from None
    return b"".join(chunks)


# Bodies up to this size are parsed on the event loop (a short piece of work: less than handing it to a worker
# thread costs in throughput, see bench/README.md); larger ones in a worker thread, so that a 16 MiB body never
# holds up every other request for the second it takes.
INLINE_WORK_BYTES = 64 * 1024


async def off_loop(size: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``: inline for work on at most ``INLINE_WORK_BYTES`` of input, else in a worker thread."""
    if size <= INLINE_WORK_BYTES:
        return function(*args)
    return await anyio.to_thread.run_sync(function, *args)


async def read_resource(request: Request, expected_type: str) -> dict[str, Any]:
    """The request body as a resource of ``expected_type`` (the type in the URL)."""
    check_content_type(request.headers.get("content-type"))
    body = await read_body(request)

    def parse() -> dict[str, Any]:
        resource = parse_resource_json(body)
        if resource["resourceType"] != expected_type:
            raise BadRequest(
                f"The resourceType '{resource['resourceType']}' does not match the type in the URL, '{expected_type}'",
                "resourceType",
            )
        return resource

    return await off_loop(len(body), parse)
