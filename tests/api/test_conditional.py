"""Conditional create, update, patch and delete (https://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

ACC = {"system": "http://hospital.example/accession", "value": "ACC123456"}


def _study(study: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**study, "identifier": [ACC], **changes}


def _count(client: TestClient, query: str) -> int:
    total: int = client.get(f"/ImagingStudy?{query}&_total=accurate").json()["total"]
    return total


def test_conditional_create_creates_when_nothing_matches(client: TestClient, study: dict[str, Any]) -> None:
    headers = {"If-None-Exist": "identifier=http://hospital.example/accession|ACC123456"}
    response = client.post("/ImagingStudy", json=_study(study), headers=headers)
    assert response.status_code == 201
    again = client.post("/ImagingStudy", json=_study(study, description="again"), headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == response.json()["id"]
    assert again.json()["description"] == "CT Chest with contrast"
    assert _count(client, "identifier=ACC123456") == 1


def test_conditional_create_with_several_matches_is_412(client: TestClient, study: dict[str, Any]) -> None:
    client.post("/ImagingStudy", json=_study(study))
    client.post("/ImagingStudy", json=_study(study))
    response = client.post("/ImagingStudy", json=_study(study), headers={"If-None-Exist": "identifier=ACC123456"})
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _count(client, "identifier=ACC123456") == 2


def test_conditional_create_with_unknown_parameter_is_400(client: TestClient, study: dict[str, Any]) -> None:
    response = client.post("/ImagingStudy", json=_study(study), headers={"If-None-Exist": "colour=blue"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["colour"]
    assert _count(client, "status=available") == 0


def test_conditional_update_creates_then_updates_the_match(client: TestClient, study: dict[str, Any]) -> None:
    created = client.put("/ImagingStudy?identifier=ACC123456", json=_study(study))
    assert created.status_code == 201
    study_id = created.json()["id"]
    updated = client.put("/ImagingStudy?identifier=ACC123456", json=_study(study, status="cancelled"))
    assert updated.status_code == 200
    assert updated.json()["id"] == study_id and updated.json()["meta"]["versionId"] == "2"
    assert _count(client, "identifier=ACC123456") == 1


def test_conditional_update_with_client_id_and_no_match_creates_that_id(
    client: TestClient, study: dict[str, Any]
) -> None:
    response = client.put("/ImagingStudy?identifier=ACC123456", json=_study(study, id="img-7"))
    assert response.status_code == 201
    assert response.json()["id"] == "img-7"


def test_conditional_update_id_mismatch_and_multiple_matches(client: TestClient, study: dict[str, Any]) -> None:
    client.put("/ImagingStudy?identifier=ACC123456", json=_study(study))
    mismatch = client.put("/ImagingStudy?identifier=ACC123456", json=_study(study, id="other"))
    assert mismatch.status_code == 400
    client.post("/ImagingStudy", json=_study(study))
    several = client.put("/ImagingStudy?identifier=ACC123456", json=_study(study))
    assert several.status_code == 412
    assert client.put("/ImagingStudy", json=_study(study)).status_code == 400  # no criteria


def test_conditional_delete_deletes_every_match(client: TestClient, study: dict[str, Any]) -> None:
    first = client.post("/ImagingStudy", json=_study(study)).json()["id"]
    second = client.post("/ImagingStudy", json=_study(study)).json()["id"]
    keep = client.post("/ImagingStudy", json=study).json()["id"]
    response = client.delete("/ImagingStudy?identifier=ACC123456")
    assert response.status_code == 200
    assert "Deleted 2" in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"/ImagingStudy/{first}").status_code == 410
    assert client.get(f"/ImagingStudy/{second}").status_code == 410
    assert client.get(f"/ImagingStudy/{keep}").status_code == 200
    assert client.delete("/ImagingStudy?identifier=ACC123456").status_code == 200  # nothing left: fine


def test_conditional_patch(client: TestClient, study: dict[str, Any]) -> None:
    client.post("/ImagingStudy", json=_study(study))
    operations = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    headers = {"Content-Type": "application/json-patch+json"}
    response = client.patch("/ImagingStudy?identifier=ACC123456", json=operations, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.patch("/ImagingStudy?identifier=NOPE", json=operations, headers=headers).status_code == 404
