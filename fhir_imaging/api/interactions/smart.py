"""SMART on FHIR discovery: ``GET [base]/.well-known/smart-configuration``
(https://hl7.org/fhir/smart-app-launch/conformance.html), public like ``/metadata``. With ``--auth-issuer`` it
names the OpenID provider's endpoints (from its discovery document) and what this server accepts; without
authorization there is nothing to discover (404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.context import in_thread, public_endpoint
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import NotFound

if TYPE_CHECKING:  # the JWT library loads only with --auth-issuer (it adds a third of a second to start-up)
    from fhir_imaging.auth.tokens import ProviderMetadata, TokenVerifier

CAPABILITIES = ("permission-v2", "permission-v1", "client-confidential-symmetric", "client-confidential-asymmetric")


def smart_document(metadata: ProviderMetadata) -> dict[str, Any]:
    document: dict[str, Any] = {"issuer": metadata.issuer, "jwks_uri": metadata.jwks_uri}
    if metadata.authorization_endpoint:
        document["authorization_endpoint"] = metadata.authorization_endpoint
    if metadata.token_endpoint:
        document["token_endpoint"] = metadata.token_endpoint
    document["grant_types_supported"] = list(metadata.grant_types or ("client_credentials",))
    if metadata.token_auth_methods:
        document["token_endpoint_auth_methods_supported"] = list(metadata.token_auth_methods)
    document["scopes_supported"] = ["system/*.cruds", "user/*.cruds", "system/*.read", "user/*.read"]
    document["capabilities"] = list(CAPABILITIES)
    return document


@public_endpoint
async def smart_configuration(request: Request) -> Response:
    verifier: TokenVerifier | None = request.app.state.verifier
    if verifier is None:
        raise NotFound("This server runs without authorization (no --auth-issuer): there is no SMART configuration")
    metadata = await in_thread(verifier.metadata)
    response = fhir_response(request, smart_document(metadata))
    response.headers["Content-Type"] = "application/json"
    return response
