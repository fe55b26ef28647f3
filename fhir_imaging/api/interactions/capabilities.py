"""capabilities: ``GET /metadata`` (https://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import base_url, in_thread, public_endpoint, service
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.capability import capability_statement
from fhir_imaging.fhir.outcome import ServiceUnavailable

if TYPE_CHECKING:  # the JWT library loads only with --auth-issuer (it adds a third of a second to start-up)
    from fhir_imaging.auth.authenticators import Authenticators

MOST_CACHED_BASES = 16  # statements kept, one per base URL (one with --public-url; per Host header without)


@public_endpoint
async def capabilities(request: Request) -> Response:
    """The CapabilityStatement, built once per base URL (at most ``MOST_CACHED_BASES`` kept) from the registry and
    the route table."""
    state = request.app.state
    base = base_url(request)
    cache: dict[str, bytes] = state.capability_cache
    body = cache.get(base)
    if body is None:
        own = f"{base}/auth/token" if state.token_issuer is not None else None
        oauth, complete = await _oauth_uris(state.verifier, service(request).settings.auth_issuer, own)
        statement = capability_statement(
            service(request).registry,
            state.type_interactions,
            state.system_interactions,
            base,
            state.started,
            operations=state.operations,
            cors=bool(service(request).settings.cors_origin),
            oauth=oauth,
        )
        body = orjson.dumps(statement)
        if len(cache) >= MOST_CACHED_BASES:  # the base comes from the client's Host header: keep the cache bounded
            cache.pop(next(iter(cache)))
        if complete:  # not while the issuer cannot be reached: its endpoints are missing
            cache[base] = body
    return fhir_response(request, body)


async def _oauth_uris(
    verifier: Authenticators | None, external: str | None, own_token_endpoint: str | None
) -> tuple[dict[str, str] | None, bool]:
    """The SMART OAuth endpoints (None without authorization), and whether they could be read from the issuer:
    the OpenID provider's (``external``, --auth-issuer), else this server's own token endpoint (--auth-clients);
    and the introspection endpoint (--auth-introspection-url)."""
    if verifier is None:
        return None, True
    introspect = {"introspect": verifier.introspection_endpoint} if verifier.introspection_endpoint else {}
    if not external:
        return ({"token": own_token_endpoint} if own_token_endpoint else {}) | introspect, True
    try:
        metadata = await in_thread(verifier.metadata)
    except ServiceUnavailable:
        return introspect, False
    if metadata is None:
        return introspect, True
    uris = {"token": metadata.token_endpoint, "authorize": metadata.authorization_endpoint, **introspect}
    return {name: uri for name, uri in uris.items() if uri}, True
