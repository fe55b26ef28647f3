"""End to end: a real server process authorizing with tokens from a real OpenID provider (npm ``oidc-provider``,
tests/e2e/oidc_provider.py): client_credentials JWTs with SMART scopes and the provider's keys, rotated mid-run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.oidc_provider import Provider, start_provider
from tests.e2e.server import ServerProcess

CLIENTS = [
    {"client_id": "pacs-bridge", "client_secret": "bridge-secret", "scope": "system/*.cruds system/ImagingStudy.rs"},
    {"client_id": "reader", "client_secret": "reader-secret", "scope": "system/ImagingStudy.rs"},
    {"client_id": "portal", "client_secret": "portal-secret", "scope": "patient/*.rs", "patient": "p1"},
]
STUDY = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with start_provider(CLIENTS) as running:
        yield running


@pytest.fixture(scope="module")
def server(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("auth-e2e")
    port_server = ServerProcess(
        f"sqlite:///{folder / 'auth.db'}",
        extra=("--auth-issuer", provider.issuer, "--auth-audience", "http://fhir.test/baseR4"),
        log=Path(folder / "server.log"),
    )
    yield port_server
    port_server.stop()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_a_provider_token_reads_and_writes_by_its_scopes(provider: Provider, server: ServerProcess) -> None:
    writer = provider.token("pacs-bridge", "bridge-secret", "system/*.cruds", "http://fhir.test/baseR4")
    created = httpx.post(f"{server.base}/ImagingStudy", json=STUDY, headers=_headers(writer))
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    reader = provider.token("reader", "reader-secret", "system/ImagingStudy.rs", "http://fhir.test/baseR4")
    assert httpx.get(f"{server.base}/ImagingStudy/{study_id}", headers=_headers(reader)).status_code == 200
    refused = httpx.delete(f"{server.base}/ImagingStudy/{study_id}", headers=_headers(reader))
    assert refused.status_code == 403 and "insufficient_scope" in refused.headers["www-authenticate"]
    assert httpx.get(f"{server.base}/ImagingStudy/{study_id}").status_code == 401
    assert httpx.get(f"{server.base}/metadata").status_code == 200


def test_a_token_for_another_server_is_refused(provider: Provider, server: ServerProcess) -> None:
    other = provider.token("reader", "reader-secret", "system/ImagingStudy.rs", "http://other.test/baseR4")
    response = httpx.get(f"{server.base}/ImagingStudy", headers=_headers(other))
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]


def test_the_provider_rotating_its_keys_needs_no_restart(provider: Provider, server: ServerProcess) -> None:
    before = provider.token("reader", "reader-secret", "system/ImagingStudy.rs", "http://fhir.test/baseR4")
    assert httpx.get(f"{server.base}/ImagingStudy", headers=_headers(before)).status_code == 200
    provider.rotate_keys()
    time.sleep(1.2)  # the resource server refreshes the JWKS at most once a second
    after = provider.token("reader", "reader-secret", "system/ImagingStudy.rs", "http://fhir.test/baseR4")
    assert after.split(".")[0] != before.split(".")[0]  # a new kid in the header
    assert httpx.get(f"{server.base}/ImagingStudy", headers=_headers(after)).status_code == 200


def test_a_patient_claim_from_the_provider_confines_the_token(provider: Provider, server: ServerProcess) -> None:
    writer = provider.token("pacs-bridge", "bridge-secret", "system/*.cruds", "http://fhir.test/baseR4")
    for study_id, patient in (("mine", "p1"), ("theirs", "p2")):
        study = {**STUDY, "id": study_id, "subject": {"reference": f"Patient/{patient}"}}
        response = httpx.put(f"{server.base}/ImagingStudy/{study_id}", json=study, headers=_headers(writer))
        assert response.status_code in (200, 201), response.text
    portal = provider.token("portal", "portal-secret", "patient/*.rs", "http://fhir.test/baseR4")
    assert httpx.get(f"{server.base}/ImagingStudy/mine", headers=_headers(portal)).status_code == 200
    assert httpx.get(f"{server.base}/ImagingStudy/theirs", headers=_headers(portal)).status_code == 404
    bundle = httpx.get(f"{server.base}/ImagingStudy", headers=_headers(portal)).json()
    subjects = {entry["resource"]["subject"]["reference"] for entry in bundle.get("entry", [])}
    assert subjects == {"Patient/p1"}
