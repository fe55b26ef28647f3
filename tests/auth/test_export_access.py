"""Bulk export under authorization: each exported type needs read and search scopes, patient scopes export their
patient's compartment only (and no system export), and a job is its owner's alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BASE


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def server(issuer: Issuer, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database=f"sqlite:///{tmp_path / 'db.db'}", auth_issuer=issuer.url, auth_audience=BASE,
                        export_dir=str(tmp_path / "files"))  # fmt: skip
    with TestClient(create_app(settings), base_url=BASE) as client:
        admin = {"Authorization": f"Bearer {issuer.token('system/*.cruds')}"}
        for patient in ("p1", "p2"):
            client.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=admin)
            study = {"resourceType": "ImagingStudy", "id": f"s-{patient}", "status": "available",
                     "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip
            client.put(f"/ImagingStudy/s-{patient}", json=study, headers=admin)
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}


def exported(client: TestClient, status: str, headers: dict[str, str]) -> dict[str, set[str]]:
    deadline = time.monotonic() + 20
    while (answer := client.get(status, headers=headers)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    found: dict[str, set[str]] = {}
    for output in answer.json()["output"]:
        body = client.get(output["url"].removeprefix(BASE), headers=headers).content
        for line in body.splitlines():
            resource: dict[str, Any] = orjson.loads(line)
            found.setdefault(resource["resourceType"], set()).add(resource["id"])
    return found


def test_each_type_needs_read_and_search(server: TestClient, issuer: Issuer) -> None:
    reader = bearer(issuer.token("system/ImagingStudy.rs"))
    assert server.get("/$export", params={"_type": "Patient"}, headers=reader).status_code == 403
    status = server.get("/$export", headers=reader).headers["content-location"].removeprefix(BASE)
    assert exported(server, status, reader) == {"ImagingStudy": {"s-p1", "s-p2"}}  # the types it may see
    nothing = bearer(issuer.token("system/ImagingStudy.c"))
    assert server.get("/$export", headers=nothing).status_code == 403


def test_patient_scopes_export_their_patient_only(server: TestClient, issuer: Issuer) -> None:
    portal = bearer(issuer.token("patient/*.rs", patient="p1"))
    assert server.get("/$export", headers=portal).status_code == 403
    status = server.get("/Patient/$export", headers=portal).headers["content-location"].removeprefix(BASE)
    assert exported(server, status, portal) == {"Patient": {"p1"}, "ImagingStudy": {"s-p1"}}


def test_a_job_is_its_owners_alone(server: TestClient, issuer: Issuer) -> None:
    owner = bearer(issuer.token("system/*.rs", sub="exporter", client_id="exporter"))
    status = server.get("/$export", headers=owner).headers["content-location"].removeprefix(BASE)
    exported(server, status, owner)
    other = bearer(issuer.token("system/*.rs", sub="someone", client_id="someone"))
    assert server.get(status, headers=other).status_code == 404
    assert server.delete(status, headers=other).status_code == 404
    assert server.get(status).status_code == 401
    assert server.get(status, headers=owner).status_code == 200


def test_granular_scopes_do_not_export(server: TestClient, issuer: Issuer) -> None:
    granular = bearer(issuer.token("system/ImagingStudy.rs?status=available system/Patient.rs"))
    refused = server.get("/$export", params={"_type": "ImagingStudy"}, headers=granular)
    assert refused.status_code == 403 and "Granular" in refused.text
    status = server.get("/$export", headers=granular).headers["content-location"].removeprefix(BASE)
    assert exported(server, status, granular) == {"Patient": {"p1", "p2"}}  # the granular type is left out
