"""The OpenID provider harness (tests/e2e/oidc_provider.py): a real oidc-provider serves discovery and a JWKS, issues
client_credentials access tokens as signed JWTs for the requested resource with SMART scopes and a per-client
``patient`` claim, and rotates its signing keys on demand.

Spec: RFC 9068 (JWT access tokens), RFC 8707 (resource indicators), SMART App Launch 2.x (scopes, ``patient``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from tests.e2e.oidc_provider import Provider, ProviderError, start_provider

pytestmark = pytest.mark.e2e

FHIR_BASE = "http://127.0.0.1:8080/baseR4"
SMART_SCOPES = "system/*.rs patient/ImagingStudy.rs user/*.cruds patient/*.read"
CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": "viewer",
        "client_secret": "viewer-secret with spaces & symbols",
        "scope": SMART_SCOPES,
        "patient": "patient-001",
        "fhirUser": "Practitioner/dr-1",
    },
    {"client_id": "backend", "client_secret": "backend-secret", "scope": "system/*.rs"},
    {"client_id": "backend-ec", "client_secret": "ec-secret", "scope": "system/*.rs", "access_token_alg": "ES256"},
    {
        "client_id": "opaque",
        "client_secret": "opaque-secret",
        "scope": "patient/*.rs",
        "patient": "patient-002",
        "access_token_format": "opaque",
    },
    {"client_id": "resource-server", "client_secret": "rs secret & symbols"},
]


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with start_provider(CLIENTS) as running:
        yield running


def header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    assert len(parts) == 3 and all(parts), token
    decoded: dict[str, Any] = jwt.get_unverified_header(token)
    return decoded


def verified(provider: Provider, token: str, resource: str = FHIR_BASE) -> dict[str, Any]:
    """The payload of ``token`` checked against the provider's published JWKS (signature, iss, aud, exp)."""
    kid = header(token)["kid"]
    jwk_set = jwt.PyJWKSet.from_dict(provider.jwks())
    key = next((key for key in jwk_set.keys if key.key_id == kid), None)
    assert key is not None, f"kid {kid} is not in the JWKS"
    payload: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256"],
        audience=resource,
        issuer=provider.issuer,
        options={"require": ["iss", "aud", "exp", "iat", "sub", "scope"]},
    )
    return payload


def published_kids(provider: Provider) -> set[str]:
    return {key["kid"] for key in provider.jwks()["keys"]}


def test_discovery_document_names_the_issuer_its_keys_and_the_token_endpoint(provider: Provider) -> None:
    assert provider.issuer == f"http://127.0.0.1:{provider.port}"
    document = provider.discovery()
    assert document["issuer"] == provider.issuer
    assert document["jwks_uri"] == provider.jwks_uri
    assert document["token_endpoint"] == provider.token_endpoint
    assert "client_credentials" in document["grant_types_supported"]
    assert set(SMART_SCOPES.split()) <= set(document["scopes_supported"])
    keys = provider.jwks()["keys"]
    assert {key["alg"] for key in keys} == {"RS256", "ES256"}
    assert all("d" not in key for key in keys), "the JWKS must publish public keys only"
    assert published_kids(provider) == set(provider.kids.values())


def test_client_credentials_token_is_a_signed_jwt_for_the_requested_resource(provider: Provider) -> None:
    scope = "system/*.rs patient/ImagingStudy.rs"
    before = int(time.time())
    token = provider.token("viewer", "viewer-secret with spaces & symbols", scope, FHIR_BASE)
    head = header(token)
    assert head["alg"] == "RS256" and head["typ"] == "at+jwt"
    assert head["kid"] == provider.kids["RS256"]
    assert head["kid"] in published_kids(provider)
    claims = verified(provider, token)
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == FHIR_BASE
    assert claims["scope"] == scope
    assert claims["sub"] == claims["client_id"] == "viewer"
    assert claims["patient"] == "patient-001"
    assert claims["fhirUser"] == "Practitioner/dr-1"
    assert claims["exp"] - claims["iat"] == 300
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5


def test_every_allowed_smart_scope_is_granted(provider: Provider) -> None:
    token = provider.token("viewer", "viewer-secret with spaces & symbols", SMART_SCOPES, FHIR_BASE)
    claims = verified(provider, token)
    assert claims["scope"] == SMART_SCOPES


def test_patient_claim_only_for_a_client_that_has_one(provider: Provider) -> None:
    claims = verified(provider, provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE))
    assert claims["scope"] == "system/*.rs"
    assert "patient" not in claims and "fhirUser" not in claims


def test_aud_is_exactly_the_resource_asked_for(provider: Provider) -> None:
    other = "http://127.0.0.1:9999/fhir"
    token = provider.token("backend", "backend-secret", "system/*.rs", other)
    assert verified(provider, token, resource=other)["aud"] == other
    with pytest.raises(jwt.InvalidAudienceError):
        verified(provider, token, resource=FHIR_BASE)


def test_es256_client_gets_tokens_signed_with_the_ec_key(provider: Provider) -> None:
    token = provider.token("backend-ec", "ec-secret", "system/*.rs", FHIR_BASE)
    assert header(token)["alg"] == "ES256"
    assert header(token)["kid"] == provider.kids["ES256"]
    assert verified(provider, token)["aud"] == FHIR_BASE


@pytest.mark.parametrize(
    ("client_id", "secret", "scope", "resource", "status", "error"),
    [
        ("backend", "backend-secret", "patient/*.read", FHIR_BASE, 400, "invalid_scope"),
        ("backend", "backend-secret", "system/*.rs", None, 400, "invalid_target"),
        ("backend", "wrong", "system/*.rs", FHIR_BASE, 401, "invalid_client"),
        ("nobody", "backend-secret", "system/*.rs", FHIR_BASE, 401, "invalid_client"),
    ],
)
def test_refusals(
    provider: Provider, client_id: str, secret: str, scope: str, resource: str | None, status: int, error: str
) -> None:
    response = provider.token_response(client_id, secret, scope, resource)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def introspect(provider: Provider, token: str, secret: str = "rs secret & symbols") -> httpx.Response:
    auth = (quote("resource-server", safe=""), quote(secret, safe=""))
    return httpx.post(provider.introspection_endpoint, data={"token": token}, auth=auth)


def test_an_opaque_token_is_introspected_until_it_is_revoked(provider: Provider) -> None:
    token = provider.token("opaque", "opaque-secret", "patient/*.rs", FHIR_BASE)
    assert token.count(".") == 0
    answer = introspect(provider, token).json()
    assert answer["active"] is True
    assert answer["aud"] == FHIR_BASE and answer["iss"] == provider.issuer
    assert answer["client_id"] == "opaque" and answer["scope"] == "patient/*.rs"
    assert answer["patient"] == "patient-002" and answer["token_type"] == "Bearer"
    assert answer["exp"] - answer["iat"] == 300
    provider.revoke("opaque", "opaque-secret", token)
    assert introspect(provider, token).json() == {"active": False}
    assert introspect(provider, "never-issued").json() == {"active": False}


def test_introspection_needs_client_authentication_and_an_opaque_token(provider: Provider) -> None:
    token = provider.token("opaque", "opaque-secret", "patient/*.rs", FHIR_BASE)
    assert introspect(provider, token, secret="wrong").status_code == 401
    structured = introspect(provider, provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE))
    assert structured.status_code == 400 and structured.json()["error"] == "unsupported_token_type"


def test_token_raises_when_refused(provider: Provider) -> None:
    with pytest.raises(ProviderError, match="invalid_scope"):
        provider.token("backend", "backend-secret", "user/*.cruds", FHIR_BASE)


def test_rotation_signs_with_a_new_kid_that_the_jwks_lists_and_drops_the_old_key() -> None:
    with start_provider(CLIENTS) as provider:
        old_token = provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE)
        old_kid = header(old_token)["kid"]
        old_kids = set(provider.kids.values())

        new_kids = provider.rotate_keys()

        assert set(new_kids.values()).isdisjoint(old_kids)
        assert published_kids(provider) == set(new_kids.values())
        token = provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE)
        assert header(token)["kid"] == new_kids["RS256"] != old_kid
        assert verified(provider, token)["aud"] == FHIR_BASE
        with pytest.raises(AssertionError, match="not in the JWKS"):
            verified(provider, old_token)
        assert header(provider.token("backend-ec", "ec-secret", "system/*.rs", FHIR_BASE))["kid"] == new_kids["ES256"]


def test_rotation_keeping_the_old_keys_published() -> None:
    with start_provider(CLIENTS, token_ttl=60) as provider:
        old_token = provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE)
        old_kids = set(provider.kids.values())

        new_kids = provider.rotate_keys(keep_old=True)

        assert published_kids(provider) == old_kids | set(new_kids.values())
        token = provider.token("backend", "backend-secret", "system/*.rs", FHIR_BASE)
        assert header(token)["kid"] == new_kids["RS256"]
        claims = verified(provider, token)
        assert claims["exp"] - claims["iat"] == 60
        assert verified(provider, old_token)["aud"] == FHIR_BASE  # still verifiable: its key is still published


def test_provider_process_is_gone_after_the_context() -> None:
    with start_provider(CLIENTS[:1]) as provider:
        process = provider.process
        assert process.poll() is None
    assert process.poll() is not None


def test_a_provider_that_cannot_start_fails_loudly() -> None:
    with pytest.raises(ProviderError, match="access_token_alg"):
        start_provider([{"client_id": "x", "client_secret": "y", "access_token_alg": "HS256"}], timeout=10)


def test_clients_are_passed_as_json() -> None:
    # Values that need quoting on a command line reach the provider intact.
    odd = {"client_id": 'odd id "quoted"', "client_secret": "s'e\"c r$et", "scope": "system/*.rs", "patient": "p 1"}
    with start_provider([odd]) as provider:
        claims = verified(provider, provider.token(odd["client_id"], odd["client_secret"], "system/*.rs", FHIR_BASE))
    assert claims["client_id"] == odd["client_id"] and claims["patient"] == "p 1"
