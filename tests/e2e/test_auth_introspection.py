"""End to end: real server processes checking opaque access tokens with the token introspection endpoint (RFC 7662)
of a real OpenID provider (npm ``oidc-provider``, tests/e2e/oidc_provider.py), next to its JWTs; the client secret
reaches the server through the environment only and never shows in its log."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.oidc_provider import Provider, start_provider
from tests.e2e.server import ServerProcess, free_port

pytestmark = pytest.mark.e2e

AUDIENCE = "http://fhir.test/baseR4"
SECRET = "introspection s3cret/7f1c&9e"  # spaces and symbols: form-encoded before the Basic encoding
SERVER_CLIENT = "fhir-server"
CLIENTS: list[dict[str, Any]] = [
    {"client_id": "pacs-bridge", "client_secret": "bridge-secret", "scope": "system/*.cruds",
     "access_token_format": "opaque"},
    {"client_id": "reader", "client_secret": "reader-secret", "scope": "system/*.rs", "access_token_format": "opaque"},
    {"client_id": "portal", "client_secret": "portal-secret", "scope": "patient/*.rs", "patient": "p1",
     "access_token_format": "opaque"},
    {"client_id": "jwt-reader", "client_secret": "jwt-secret", "scope": "system/*.rs"},
    {"client_id": SERVER_CLIENT, "client_secret": SECRET},
]  # fmt: skip
STUDY = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with start_provider(CLIENTS) as running:
        yield running


def _serve(folder: Path, url: str, secret: str, issuer: str | None = None) -> ServerProcess:
    """A server checking tokens with ``url`` (and JWTs from ``issuer``), logging at debug level to server.log."""
    extra = ("--auth-introspection-url", url, "--auth-introspection-client-id", SERVER_CLIENT)
    extra += ("--auth-audience", AUDIENCE, "--log-level", "debug")
    if issuer:
        extra += ("--auth-issuer", issuer)
    return ServerProcess(
        f"sqlite:///{folder / 'auth.db'}",
        extra=extra,
        log=folder / "server.log",
        environ={"FHIR_IMAGING_INTROSPECTION_SECRET": secret},
    )


@pytest.fixture(scope="module")
def server(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """JWTs and opaque tokens from the same provider."""
    running = _serve(tmp_path_factory.mktemp("both"), provider.introspection_endpoint, SECRET, provider.issuer)
    yield running
    running.stop()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"


def _assert_secret_not_logged(server: ServerProcess) -> str:
    """The server's log so far, checked for the secret in every form it is sent in."""
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    basic = base64.b64encode(f"{SERVER_CLIENT}:{quote(SECRET, safe='')}".encode()).decode()
    for form in (SECRET, quote(SECRET, safe=""), quote(SECRET), basic):
        assert form not in log
    return log


def test_an_opaque_token_searches_by_its_scopes(provider: Provider, server: ServerProcess) -> None:
    writer = provider.token("pacs-bridge", "bridge-secret", "system/*.cruds", AUDIENCE)
    assert "." not in writer  # opaque: only introspection can tell what it allows
    created = httpx.post(f"{server.base}/ImagingStudy", json=STUDY, headers=_headers(writer))
    assert created.status_code == 201, created.text
    reader = provider.token("reader", "reader-secret", "system/*.rs", AUDIENCE)
    search = httpx.get(f"{server.base}/ImagingStudy", headers=_headers(reader))
    assert search.status_code == 200, search.text
    assert search.json()["resourceType"] == "Bundle" and search.json()["entry"]
    refused = httpx.post(f"{server.base}/ImagingStudy", json=STUDY, headers=_headers(reader))
    assert refused.status_code == 403 and "insufficient_scope" in refused.headers["www-authenticate"]


def test_a_jwt_from_the_issuer_still_goes_to_the_jwt_check(provider: Provider, server: ServerProcess) -> None:
    # The provider refuses to introspect JWTs (400 unsupported_token_type): a 200 means the JWKS checked it.
    token = provider.token("jwt-reader", "jwt-secret", "system/*.rs", AUDIENCE)
    assert token.count(".") == 2
    assert httpx.get(f"{server.base}/ImagingStudy", headers=_headers(token)).status_code == 200


def test_revoked_and_unknown_tokens_are_401(provider: Provider, server: ServerProcess) -> None:
    revoked = provider.token("reader", "reader-secret", "system/*.rs", AUDIENCE)
    provider.revoke("reader", "reader-secret", revoked)
    _assert_401(httpx.get(f"{server.base}/ImagingStudy", headers=_headers(revoked)))
    _assert_401(httpx.get(f"{server.base}/ImagingStudy", headers=_headers("never-issued-by-anyone")))
    _assert_401(httpx.get(f"{server.base}/ImagingStudy", headers=_headers("not.a.jwt")))


def test_an_opaque_token_for_another_server_is_401(provider: Provider, server: ServerProcess) -> None:
    other = provider.token("reader", "reader-secret", "system/*.rs", "http://other.test/baseR4")
    response = httpx.get(f"{server.base}/ImagingStudy", headers=_headers(other))
    _assert_401(response)
    assert "not for this server" in response.json()["issue"][0]["diagnostics"]


def test_the_patient_claim_of_an_opaque_token_confines_it(provider: Provider, server: ServerProcess) -> None:
    writer = provider.token("pacs-bridge", "bridge-secret", "system/*.cruds", AUDIENCE)
    for study_id, patient in (("mine", "p1"), ("theirs", "p2")):
        study = {**STUDY, "id": study_id, "subject": {"reference": f"Patient/{patient}"}}
        response = httpx.put(f"{server.base}/ImagingStudy/{study_id}", json=study, headers=_headers(writer))
        assert response.status_code in (200, 201), response.text
    portal = provider.token("portal", "portal-secret", "patient/*.rs", AUDIENCE)
    assert httpx.get(f"{server.base}/ImagingStudy/mine", headers=_headers(portal)).status_code == 200
    assert httpx.get(f"{server.base}/ImagingStudy/theirs", headers=_headers(portal)).status_code == 404
    bundle = httpx.get(f"{server.base}/ImagingStudy", headers=_headers(portal)).json()
    subjects = {entry["resource"]["subject"]["reference"] for entry in bundle.get("entry", [])}
    assert subjects == {"Patient/p1"}


def test_discovery_names_the_introspection_endpoint(provider: Provider, server: ServerProcess) -> None:
    smart = httpx.get(f"{server.base}/.well-known/smart-configuration").json()
    assert smart["introspection_endpoint"] == provider.introspection_endpoint
    assert smart["token_endpoint"] == provider.token_endpoint
    security = httpx.get(f"{server.base}/metadata").json()["rest"][0]["security"]
    uris = {item["url"]: item["valueUri"] for item in security["extension"][0]["extension"]}
    assert uris["introspect"] == provider.introspection_endpoint


def test_the_secret_is_not_in_the_log(provider: Provider, server: ServerProcess) -> None:
    token = provider.token("reader", "reader-secret", "system/*.rs", AUDIENCE)
    assert httpx.get(f"{server.base}/ImagingStudy", headers=_headers(token)).status_code == 200
    _assert_401(httpx.get(f"{server.base}/ImagingStudy", headers=_headers("unknown-token")))
    log = _assert_secret_not_logged(server)
    assert "/baseR4/ImagingStudy" in log  # the request log is there: the check above read something


def test_introspection_alone_checks_every_token(provider: Provider, tmp_path: Path) -> None:
    server = _serve(tmp_path, provider.introspection_endpoint, SECRET)
    try:
        reader = provider.token("reader", "reader-secret", "system/*.rs", AUDIENCE)
        assert httpx.get(f"{server.base}/ImagingStudy", headers=_headers(reader)).status_code == 200
        jwt = provider.token("jwt-reader", "jwt-secret", "system/*.rs", AUDIENCE)
        _assert_401(httpx.get(f"{server.base}/ImagingStudy", headers=_headers(jwt)))  # the provider won't say
        assert httpx.get(f"{server.base}/.well-known/smart-configuration").status_code == 404
        security = httpx.get(f"{server.base}/metadata").json()["rest"][0]["security"]
        assert security["extension"][0]["extension"] == [
            {"url": "introspect", "valueUri": provider.introspection_endpoint}
        ]
    finally:
        server.stop()
    _assert_secret_not_logged(server)


def test_an_endpoint_that_is_down_is_503(tmp_path: Path) -> None:
    server = _serve(tmp_path, f"http://127.0.0.1:{free_port()}/token/introspection", SECRET)
    try:
        _assert_503(httpx.get(f"{server.base}/ImagingStudy", headers=_headers("some-opaque-token")))
        assert httpx.get(f"{server.base}/metadata").status_code == 200
    finally:
        server.stop()
    log = _assert_secret_not_logged(server)
    assert "token introspection endpoint" in log and "cannot be reached" in log


def test_a_refused_server_secret_is_503_and_named_in_the_log(provider: Provider, tmp_path: Path) -> None:
    server = _serve(tmp_path, provider.introspection_endpoint, "not the secret")
    try:
        token = provider.token("reader", "reader-secret", "system/*.rs", AUDIENCE)
        _assert_503(httpx.get(f"{server.base}/ImagingStudy", headers=_headers(token)))
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace") if server.log_path else ""
    assert "FHIR_IMAGING_INTROSPECTION_SECRET" in log and "not the secret" not in log
