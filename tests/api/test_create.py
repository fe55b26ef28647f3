"""create: POST /[type] (https://hl7.org/fhir/R4/http.html#create)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.conftest import BASE


def test_create_seed_study_returns_201_with_location_etag_and_meta(client: TestClient, study: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=study, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 201
    body = response.json()
    assert body["resourceType"] == "ImagingStudy"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["location"] == f"{BASE}/ImagingStudy/{body['id']}/_history/1"
    assert response.headers["content-location"] == response.headers["location"]
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["content-type"].startswith("application/fhir+json")
    for key, value in study.items():
        assert body[key] == value


def test_create_ignores_id_in_body(client: TestClient, study: dict[str, Any]) -> None:
    study["id"] = "client-chosen"
    body = client.post("/ImagingStudy", json=study).json()
    assert body["id"] != "client-chosen"
    assert client.get("/ImagingStudy/client-chosen").status_code == 404


def test_create_keeps_sent_meta_elements_and_replaces_version(client: TestClient, study: dict[str, Any]) -> None:
    study["meta"] = {"versionId": "99", "tag": [{"system": "http://example.org/tags", "code": "research"}]}
    body = client.post("/ImagingStudy", json=study).json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"] == [{"system": "http://example.org/tags", "code": "research"}]


def test_create_accepts_plain_json_content_type(client: TestClient, patient: dict[str, Any]) -> None:
    response = client.post("/Patient", json=patient, headers={"Content-Type": "application/json"})
    assert response.status_code == 201


def test_create_with_resource_type_mismatching_url_is_400(client: TestClient, patient: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=patient)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["resourceType"]
    assert "Patient" in issue["diagnostics"] and "ImagingStudy" in issue["diagnostics"]


def test_create_of_unknown_type_is_404(client: TestClient) -> None:
    response = client.post("/Imagingstudy", json={"resourceType": "Imagingstudy"})
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_create_prefer_minimal_returns_no_body(client: TestClient, study: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=study, headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"]
    assert response.headers["etag"] == 'W/"1"'


def test_create_prefer_operation_outcome_returns_outcome(client: TestClient, study: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=study, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"


def test_create_prefer_representation_returns_resource(client: TestClient, study: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=study, headers={"Prefer": "return=representation"})
    assert response.json()["resourceType"] == "ImagingStudy"


def test_create_then_read_returns_same_resource(client: TestClient, study: dict[str, Any]) -> None:
    created = client.post("/ImagingStudy", json=study).json()
    read = client.get(f"/ImagingStudy/{created['id']}").json()
    assert read == created


def test_any_r4_resource_type_can_be_created(client: TestClient) -> None:
    for resource in (
        {
            "resourceType": "Endpoint",
            "status": "active",
            "connectionType": {"code": "dicom-wado-rs"},
            "payloadType": [{"text": "DICOM"}],
            "address": "https://pacs.example.org/wado",
        },
        {"resourceType": "Practitioner", "name": [{"family": "Careful"}]},
        {"resourceType": "Basic", "code": {"text": "x"}},
    ):
        assert client.post(f"/{resource['resourceType']}", json=resource).status_code == 201
