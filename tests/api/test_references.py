"""References need not resolve by default; ``--enforce-references`` refuses dangling ones (400)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.conftest import BASE


@pytest.fixture
def strict(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(dataclasses.replace(settings, enforce_references=True)), base_url=BASE) as client:
        yield client


def test_dangling_references_are_accepted_by_default(client: TestClient, study: dict[str, Any]) -> None:
    assert client.post("/ImagingStudy", json=study).status_code == 201


def test_enforced_dangling_reference_is_400_naming_the_element(strict: TestClient, study: dict[str, Any]) -> None:
    response = strict.post("/ImagingStudy", json=study)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["ImagingStudy.subject.reference"]
    assert "Patient/patient-001" in issue["diagnostics"]
    assert "entry" not in strict.get("/_history").json()


def test_enforced_reference_to_existing_resource_is_accepted(
    strict: TestClient, study: dict[str, Any], patient: dict[str, Any]
) -> None:
    patient["id"] = "patient-001"
    assert strict.put("/Patient/patient-001", json=patient).status_code == 201
    assert strict.post("/ImagingStudy", json=study).status_code == 201
    study["subject"] = {"reference": f"{BASE}/Patient/patient-001"}
    assert strict.post("/ImagingStudy", json=study).status_code == 201
    strict.delete("/Patient/patient-001")
    assert strict.post("/ImagingStudy", json=study).status_code == 400


def test_enforced_references_leave_external_and_contained_alone(strict: TestClient, study: dict[str, Any]) -> None:
    study["subject"] = {"reference": "http://elsewhere.example.org/fhir/Patient/1"}
    study["referrer"] = {"reference": "#dr"}
    study["contained"] = [{"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]}]
    assert strict.post("/ImagingStudy", json=study).status_code == 201


def test_enforced_references_in_a_transaction_may_point_at_other_entries(
    strict: TestClient, study: dict[str, Any], patient: dict[str, Any]
) -> None:
    study["subject"] = {"reference": "urn:uuid:3f0b3a4e-9c1e-4f8e-8d3a-1b2c3d4e5f60"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": study, "request": {"method": "POST", "url": "ImagingStudy"}},
            {"fullUrl": "urn:uuid:3f0b3a4e-9c1e-4f8e-8d3a-1b2c3d4e5f60", "resource": patient,
             "request": {"method": "POST", "url": "Patient"}},
        ],
    }  # fmt: skip
    assert strict.post("", json=bundle).status_code == 200
    dangling = dict(study, subject={"reference": "Patient/nobody"})
    response = strict.post(
        "", json={**bundle, "entry": [{"resource": dangling, "request": bundle["entry"][0]["request"]}]}
    )
    assert response.status_code == 400
    assert "Bundle.entry[0]" in response.json()["issue"][0]["expression"]


def test_enforced_references_on_update_and_patch(strict: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    assert strict.put("/Patient/p1", json=patient).status_code == 201
    linked = dict(patient, generalPractitioner=[{"reference": "Practitioner/ghost"}])
    assert strict.put("/Patient/p1", json=linked).status_code == 400
    operations = [{"op": "add", "path": "/generalPractitioner", "value": [{"reference": "Practitioner/ghost"}]}]
    response = strict.patch("/Patient/p1", json=operations, headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 400
