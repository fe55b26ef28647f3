"""SMART on FHIR discovery and the built-in token endpoint.

``GET [base]/.well-known/smart-configuration`` (https://hl7.org/fhir/smart-app-launch/conformance.html) is public like
``/metadata``: with ``--auth-issuer`` it names the OpenID provider's endpoints (from its discovery document; when the
provider has an authorization endpoint and PKCE with S256, also ``code_challenge_methods_supported`` and the
capabilities ``launch-standalone`` and ``client-public``: the study browser's sign-in); with
``--auth-clients`` alone, this server's own token endpoint; and the token introspection endpoint with
``--auth-introspection-url`` (``introspection_endpoint``). Without a token endpoint to name there is nothing to
discover (404): introspection alone names none, which the document requires.

``POST [base]/auth/token`` answers SMART Backend Services token requests (auth/backend.py) with RFC 6749 JSON, not
FHIR: ``{"access_token": …}`` or ``{"error": …}``; ``GET [base]/auth/jwks`` publishes the key its tokens are signed
with. Both exist with ``--auth-clients`` only (else 404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import base_url, in_thread, public_endpoint, read_body, service
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.audit import token_event
from fhir_imaging.audit_log import AuditLog
from fhir_imaging.fhir.outcome import NotFound

if TYPE_CHECKING:  # the JWT library loads only with authorization (it adds a third of a second to start-up)
    from fhir_imaging.auth.authenticators import Authenticators
    from fhir_imaging.auth.backend import BackendTokenIssuer
    from fhir_imaging.auth.tokens import ProviderMetadata

CAPABILITIES = ("permission-v2", "permission-v1", "client-confidential-symmetric", "client-confidential-asymmetric")
LAUNCH_CAPABILITIES = ("launch-standalone", "client-public")
BACKEND_CAPABILITIES = ("permission-v2", "permission-v1", "client-confidential-asymmetric")
SCOPES = ["system/*.cruds", "user/*.cruds", "system/*.read", "user/*.read"]
MAX_TOKEN_REQUEST = 64 * 1024  # bytes of a token request's form (an assertion is at most 16 KiB)
MAX_TOKEN_FIELDS = 20
NO_STORE = {"Pragma": "no-cache"}  # RFC 6749 §5.1 (Cache-Control: no-store is on every answer: api/errors.py)


def smart_document(metadata: ProviderMetadata, introspection_endpoint: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"issuer": metadata.issuer, "jwks_uri": metadata.jwks_uri}
    if metadata.authorization_endpoint:
        document["authorization_endpoint"] = metadata.authorization_endpoint
    if metadata.token_endpoint:
        document["token_endpoint"] = metadata.token_endpoint
    if introspection_endpoint:
        document["introspection_endpoint"] = introspection_endpoint
    document["grant_types_supported"] = list(metadata.grant_types or ("client_credentials",))
    if metadata.token_auth_methods:
        document["token_endpoint_auth_methods_supported"] = list(metadata.token_auth_methods)
    document["scopes_supported"] = SCOPES
    document["capabilities"] = list(CAPABILITIES)
    if metadata.authorization_endpoint and "S256" in metadata.code_challenge_methods:
        # A browser app (the study browser at /app/) can sign its user in: authorization code with PKCE, S256 only
        # (SMART forbids plain).
        document["code_challenge_methods_supported"] = ["S256"]
        document["capabilities"] += list(LAUNCH_CAPABILITIES)
    return document


def backend_document(issuer: str, base: str, introspection_endpoint: str | None = None) -> dict[str, Any]:
    """The SMART configuration of this server's own token endpoint, at the base the request came in on."""
    from fhir_imaging.auth.keys import ASSERTION_ALGORITHMS

    document: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": f"{base}/auth/jwks",
        "token_endpoint": f"{base}/auth/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": SCOPES,
        "capabilities": list(BACKEND_CAPABILITIES),
    }
    if introspection_endpoint:
        document["introspection_endpoint"] = introspection_endpoint
    return document


@public_endpoint
async def smart_configuration(request: Request) -> Response:
    state = request.app.state
    issuer: BackendTokenIssuer | None = state.token_issuer
    verifier: Authenticators | None = state.verifier
    if verifier is None:
        raise NotFound("This server runs without authorization (no --auth-issuer): there is no SMART configuration")
    introspection = verifier.introspection_endpoint
    if service(request).settings.auth_issuer:
        metadata = await in_thread(verifier.metadata)
        assert metadata is not None
        document = smart_document(metadata, introspection)
    elif issuer is not None:
        document = backend_document(issuer.issuer, base_url(request), introspection)
    else:
        raise NotFound(
            "This server checks tokens by introspection only (no --auth-issuer): it knows no token endpoint to publish"
        )
    response = fhir_response(request, document)
    response.headers["Content-Type"] = "application/json"
    return response


def _issuer(request: Request) -> BackendTokenIssuer:
    issuer: BackendTokenIssuer | None = request.app.state.token_issuer
    if issuer is None:
        raise NotFound("This server has no token endpoint: it runs without --auth-clients")
    return issuer


@public_endpoint
async def jwks(request: Request) -> Response:
    """The public keys of this server's access tokens (RFC 7517 JWK Set)."""
    return Response(orjson.dumps(_issuer(request).jwks()), media_type="application/json")


@public_endpoint
async def token(request: Request) -> Response:
    """One SMART Backend Services token request (``application/x-www-form-urlencoded``)."""
    from fhir_imaging.auth.backend import TokenRequestError

    issuer = _issuer(request)
    try:
        form = await _form(request)
        store = service(request).store

        def spend(client_id: str, jti: str, expires: float) -> bool:
            return store.transact(lambda tx: tx.spend_assertion(client_id, jti, expires))

        token_url = f"{base_url(request)}/auth/token"
        issued = await in_thread(issuer.issue, form, (token_url,), spend)
    except TokenRequestError as exc:
        _audit(request, 400, None, error=exc.error)
        return Response(orjson.dumps(exc.body()), 400, NO_STORE, "application/json")
    _audit(request, 200, issued.client_id, scope=issued.scope)
    return Response(orjson.dumps(issued.body()), 200, NO_STORE, "application/json")


def _audit(request: Request, status: int, client_id: str | None, **details: str) -> None:
    audit: AuditLog | None = request.app.state.audit
    if audit is not None:
        client = request.scope.get("client")
        address = client[0] if client else None
        request_id = request.scope.get("request_id")
        audit.record(token_event(status, client_id, address=address, request_id=request_id, **details))


async def _form(request: Request) -> dict[str, str]:
    """The request's form fields; a field given twice is an error (RFC 6749 §3.2)."""
    from fhir_imaging.auth.backend import TokenRequestError

    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise TokenRequestError("invalid_request", "the request must be application/x-www-form-urlencoded")
    body = await read_body(request, MAX_TOKEN_REQUEST)
    try:
        pairs = parse_qsl(body.decode("ascii"), max_num_fields=MAX_TOKEN_FIELDS, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise TokenRequestError("invalid_request", "the request is not a well-formed form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise TokenRequestError("invalid_request", f"{name[:40]} is given more than once")
        form[name] = value
    return form
