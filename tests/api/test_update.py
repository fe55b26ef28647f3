"""update and update-as-create, with If-Match (https://hl7.org/fhir/R4/http.html#update, #concurrency)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.conftest import BASE


def test_update_makes_a_new_version_and_returns_200(client: TestClient, study: dict[str, Any]) -> None:
    created = client.post("/ImagingStudy", json=study).json()
    changed = dict(created, status="cancelled")
    response = client.put(f"/ImagingStudy/{created['id']}", json=changed)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["content-location"] == f"{BASE}/ImagingStudy/{created['id']}/_history/2"


def test_update_as_create_with_client_id_returns_201(client: TestClient, study: dict[str, Any]) -> None:
    study["id"] = "img-001"
    response = client.put("/ImagingStudy/img-001", json=study)
    assert response.status_code == 201
    assert response.headers["location"] == f"{BASE}/ImagingStudy/img-001/_history/1"
    assert response.json()["meta"]["versionId"] == "1"
    assert client.get("/ImagingStudy/img-001").status_code == 200


def test_update_with_body_id_not_matching_url_is_400(client: TestClient, study: dict[str, Any]) -> None:
    study["id"] = "other"
    response = client.put("/ImagingStudy/img-001", json=study)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["ImagingStudy.id"]
    assert client.get("/ImagingStudy/img-001").status_code == 404


def test_update_without_body_id_is_400(client: TestClient, study: dict[str, Any]) -> None:
    response = client.put("/ImagingStudy/img-001", json=study)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["ImagingStudy.id"]


def test_update_with_invalid_url_id_is_400(client: TestClient, study: dict[str, Any]) -> None:
    study["id"] = "a" * 65
    response = client.put(f"/ImagingStudy/{'a' * 65}", json=study)
    assert response.status_code == 400


def test_update_with_current_if_match_succeeds(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    client.put("/Patient/p1", json=patient)
    response = client.put("/Patient/p1", json=patient, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'


def test_update_with_stale_if_match_is_412_and_changes_nothing(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    client.put("/Patient/p1", json=patient)
    client.put("/Patient/p1", json=patient)
    stale = dict(patient, gender="female")
    response = client.put("/Patient/p1", json=stale, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["If-Match"]
    current = client.get("/Patient/p1").json()
    assert current["meta"]["versionId"] == "2" and current["gender"] == "male"


def test_update_with_malformed_if_match_is_400(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    response = client.put("/Patient/p1", json=patient, headers={"If-Match": "banana"})
    assert response.status_code == 400


def test_update_of_deleted_resource_recreates_it(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    client.put("/Patient/p1", json=patient)
    client.delete("/Patient/p1")
    response = client.put("/Patient/p1", json=patient)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"
    assert client.get("/Patient/p1").status_code == 200


def test_update_prefer_minimal(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    response = client.put("/Patient/p1", json=patient, headers={"Prefer": "return=minimal"})
    assert response.status_code == 201 and response.content == b""
