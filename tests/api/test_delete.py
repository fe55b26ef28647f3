"""delete (https://hl7.org/fhir/R4/http.html#delete)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def test_delete_returns_200_outcome_and_read_answers_410(client: TestClient, study: dict[str, Any]) -> None:
    created = client.post("/ImagingStudy", json=study).json()
    response = client.delete(f"/ImagingStudy/{created['id']}")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(f"/ImagingStudy/{created['id']}").status_code == 410


def test_delete_keeps_history(client: TestClient, study: dict[str, Any]) -> None:
    created = client.post("/ImagingStudy", json=study).json()
    client.delete(f"/ImagingStudy/{created['id']}")
    history = client.get(f"/ImagingStudy/{created['id']}/_history").json()
    assert [entry["request"]["method"] for entry in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.get(f"/ImagingStudy/{created['id']}/_history/1").json()["status"] == "available"


def test_delete_of_unknown_resource_is_200_without_version(client: TestClient) -> None:
    response = client.delete("/ImagingStudy/never-was")
    assert response.status_code == 200
    assert client.get("/ImagingStudy/never-was").status_code == 404


def test_delete_twice_makes_one_deletion(client: TestClient, patient: dict[str, Any]) -> None:
    created = client.post("/Patient", json=patient).json()
    client.delete(f"/Patient/{created['id']}")
    assert client.delete(f"/Patient/{created['id']}").status_code == 200
    assert client.get(f"/Patient/{created['id']}/_history").json()["total"] == 2


def test_delete_with_stale_if_match_is_412(client: TestClient, patient: dict[str, Any]) -> None:
    created = client.post("/Patient", json=patient).json()
    client.put(f"/Patient/{created['id']}", json=created)
    response = client.delete(f"/Patient/{created['id']}", headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert client.get(f"/Patient/{created['id']}").status_code == 200
