"""history for an instance, a type and the whole system: https://hl7.org/fhir/R4/http.html#history

Newest first; ``_count`` and ``_since``; pages follow a cursor on the server-wide history order, so a ``next``
link keeps returning the same versions while others write, and a version committed late never lands behind a page
already served (storage/history.py).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import (
    bases,
    caller,
    endpoint,
    in_thread,
    note_returned,
    resource_id_of,
    resource_type_of,
    service,
)
from fhir_imaging.api.headers import handling_preference
from fhir_imaging.api.params import parse_count, parse_cursor, parse_since
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.bundle import history_bundle
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.search.paging import CURSOR, encode_history_cursor
from fhir_imaging.storage.base import HistoryQuery

KNOWN_PARAMS = frozenset({"_count", "_since", "_format", "_pretty", CURSOR})


async def _history(request: Request, resource_type: str | None, resource_id: str | None) -> Response:
    svc = service(request)
    params = request.query_params
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown and handling_preference(request.headers.get("prefer")) == "strict":
        raise BadRequest(f"Unknown or unsupported history parameter(s): {', '.join(unknown)}", *unknown)
    count = parse_count(params.get("_count"), svc.settings.default_count, svc.settings.max_count)
    query = HistoryQuery(
        resource_type=resource_type,
        id=resource_id,
        since=parse_since(params.get("_since")),
        at_or_before=parse_cursor(params.get(CURSOR)),
        count=count,
    )
    where = bases(request)
    versions, next_cursor, total = await in_thread(svc.history, caller(request), query, where)
    base = where.url
    path = "/".join(part for part in (base, resource_type, resource_id, "_history") if part)
    kept = [(key, value) for key, value in params.multi_items() if key in KNOWN_PARAMS]
    links = {"self": f"{path}?{urlencode(kept)}" if kept else path}
    if next_cursor is not None and count > 0:
        following = [(key, value) for key, value in kept if key != CURSOR]
        following.append((CURSOR, encode_history_cursor(next_cursor)))
        links["next"] = f"{path}?{urlencode(following)}"
    note_returned(request, lambda: [f"{v.resource_type}/{v.id}/_history/{v.version}" for v in versions])
    return fhir_response(request, history_bundle(base, versions, links, total))


@endpoint
async def history_instance(request: Request) -> Response:
    return await _history(request, resource_type_of(request), resource_id_of(request))


@endpoint
async def history_type(request: Request) -> Response:
    return await _history(request, resource_type_of(request), None)


@endpoint
async def history_system(request: Request) -> Response:
    return await _history(request, None, None)
