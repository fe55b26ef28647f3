"""SMART on FHIR discovery: ``GET [base]/.well-known/smart-configuration``
(https://hl7.org/fhir/smart-app-launch/conformance.html), public like ``/metadata``. With ``--auth-issuer`` it
names the OpenID provider's endpoints (from its discovery document), the token introspection endpoint with
``--auth-introspection-url`` (``introspection_endpoint``), and what this server accepts. Without an issuer there is
nothing to discover (404): introspection alone names no token endpoint, which the document requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import in_thread, public_endpoint
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import NotFound

if TYPE_CHECKING:  # the JWT library loads only with --auth-issuer (it adds a third of a second to start-up)
    from fhir_imaging.auth.authenticators import Authenticators
    from fhir_imaging.auth.tokens import ProviderMetadata

CAPABILITIES = ("permission-v2", "permission-v1", "client-confidential-symmetric", "client-confidential-asymmetric")


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
    document["scopes_supported"] = ["system/*.cruds", "user/*.cruds", "system/*.read", "user/*.read"]
    document["capabilities"] = list(CAPABILITIES)
    return document


@public_endpoint
async def smart_configuration(request: Request) -> Response:
    verifier: Authenticators | None = request.app.state.verifier
    if verifier is None:
        raise NotFound("This server runs without authorization (no --auth-issuer): there is no SMART configuration")
    metadata = await in_thread(verifier.metadata)
    if metadata is None:
        raise NotFound(
            "This server checks tokens by introspection only (no --auth-issuer): it knows no token endpoint to publish"
        )
    response = fhir_response(request, smart_document(metadata, verifier.introspection_endpoint))
    response.headers["Content-Type"] = "application/json"
    return response
