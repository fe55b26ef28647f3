"""capabilities: ``GET /metadata`` (https://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import base_url, context, endpoint
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.capability import capability_statement


@endpoint
async def capabilities(request: Request) -> Response:
    """The CapabilityStatement, built once per base URL from the registry and the route table."""
    state = request.app.state
    base = base_url(request)
    if base not in state.capability_cache:
        statement = capability_statement(
            context(request).registry,
            state.type_interactions,
            state.system_interactions,
            base,
            state.started,
            operations=state.operations,
        )
        state.capability_cache[base] = orjson.dumps(statement)
    return fhir_response(request, state.capability_cache[base])
