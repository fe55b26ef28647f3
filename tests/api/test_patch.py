"""patch: JSON Patch and FHIRPath Patch (https://hl7.org/fhir/R4/http.html#patch, fhirpatch.html)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def study_id(client: TestClient, study: dict[str, Any]) -> str:
    study["id"] = "img-001"
    study["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]
    assert client.put("/ImagingStudy/img-001", json=study).status_code == 201
    return "img-001"


def _operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            part.append({"name": "value", **value})
        elif isinstance(value, int):
            part.append({"name": name, "valueInteger": value})
        else:
            part.append({"name": name, "valueString": value})
    return {"name": "operation", "part": part}


def _fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def test_json_patch_replaces_and_makes_a_new_version(client: TestClient, study_id: str) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "cancelled"}, {"op": "remove", "path": "/description"}]
    response = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers=JSON_PATCH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and "description" not in body
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(f"/ImagingStudy/{study_id}").json() == body


def test_json_patch_that_makes_the_resource_invalid_is_refused_and_changes_nothing(
    client: TestClient, study_id: str
) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "finished"}]
    response = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers=JSON_PATCH)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["ImagingStudy.status"]
    removed = client.patch(f"/ImagingStudy/{study_id}", json=[{"op": "remove", "path": "/subject"}], headers=JSON_PATCH)
    assert removed.status_code == 422
    current = client.get(f"/ImagingStudy/{study_id}").json()
    assert current["meta"]["versionId"] == "1" and current["status"] == "available"


def test_json_patch_failing_test_op_is_422(client: TestClient, study_id: str) -> None:
    operations = [{"op": "test", "path": "/status", "value": "registered"}]
    response = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers=JSON_PATCH)
    assert response.status_code == 422


def test_malformed_json_patch_is_400(client: TestClient, study_id: str) -> None:
    for document in ({"op": "replace"}, [{"op": "jump", "path": "/status"}]):
        response = client.patch(f"/ImagingStudy/{study_id}", json=document, headers=JSON_PATCH)
        assert response.status_code == 400, document
        assert response.json()["resourceType"] == "OperationOutcome"


def test_patch_may_not_change_the_id(client: TestClient, study_id: str) -> None:
    operations = [{"op": "replace", "path": "/id", "value": "other"}]
    response = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers=JSON_PATCH)
    assert response.status_code == 422


def test_patch_honours_if_match(client: TestClient, study_id: str) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    stale = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers={**JSON_PATCH, "If-Match": 'W/"9"'})
    assert stale.status_code == 412
    fresh = client.patch(f"/ImagingStudy/{study_id}", json=operations, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200


def test_patch_of_unknown_or_deleted_resource(client: TestClient, study_id: str) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    assert client.patch("/ImagingStudy/nothing", json=operations, headers=JSON_PATCH).status_code == 404
    client.delete(f"/ImagingStudy/{study_id}")
    assert client.patch(f"/ImagingStudy/{study_id}", json=operations, headers=JSON_PATCH).status_code == 410


def test_patch_in_xml_is_415(client: TestClient, study_id: str) -> None:
    response = client.patch(f"/ImagingStudy/{study_id}", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415


def test_fhirpath_patch_replace_add_insert_move_delete(client: TestClient, study_id: str) -> None:
    patch = _fhirpath_patch(
        _operation("replace", "ImagingStudy.status", value={"valueCode": "registered"}),
        _operation(
            "add",
            "ImagingStudy",
            name="identifier",
            value={"valueIdentifier": {"system": "http://hospital.example/acc", "value": "ACC123456"}},
        ),
        _operation("add", "ImagingStudy", name="note", value={"part": [{"name": "text", "valueMarkdown": "urgent"}]}),
        _operation(
            "insert",
            "ImagingStudy.modality",
            index=0,
            value={"valueCoding": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}},
        ),
        _operation("move", "ImagingStudy.modality", source=0, destination=1),
        _operation("delete", "ImagingStudy.identifier.where(system = 'urn:dicom:uid')"),
        _operation("delete", "ImagingStudy.description"),
    )
    response = client.patch(f"/ImagingStudy/{study_id}", json=patch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "registered"
    assert body["identifier"] == [{"system": "http://hospital.example/acc", "value": "ACC123456"}]
    assert body["note"] == [{"text": "urgent"}]
    assert [coding["code"] for coding in body["modality"]] == ["CT", "MR"]
    assert "description" not in body


def test_fhirpath_patch_delete_of_nothing_is_fine_and_of_many_is_422(client: TestClient, study_id: str) -> None:
    nothing = _fhirpath_patch(_operation("delete", "ImagingStudy.series"))
    assert client.patch(f"/ImagingStudy/{study_id}", json=nothing).status_code == 200
    two = _fhirpath_patch(
        _operation("add", "ImagingStudy", name="note", value={"valueAnnotation": {"text": "a"}}),
        _operation("add", "ImagingStudy", name="note", value={"valueAnnotation": {"text": "b"}}),
        _operation("delete", "ImagingStudy.note"),
    )
    response = client.patch(f"/ImagingStudy/{study_id}", json=two)
    assert response.status_code == 422
    assert client.get(f"/ImagingStudy/{study_id}").json()["meta"]["versionId"] == "2"


def test_fhirpath_patch_add_of_existing_single_element_is_422(client: TestClient, study_id: str) -> None:
    patch = _fhirpath_patch(_operation("add", "ImagingStudy", name="description", value={"valueString": "again"}))
    assert client.patch(f"/ImagingStudy/{study_id}", json=patch).status_code == 422


def test_fhirpath_patch_that_breaks_a_binding_is_refused(client: TestClient, study_id: str) -> None:
    patch = _fhirpath_patch(_operation("replace", "ImagingStudy.status", value={"valueCode": "finished"}))
    response = client.patch(f"/ImagingStudy/{study_id}", json=patch)
    assert response.status_code == 422
    assert client.get(f"/ImagingStudy/{study_id}").json()["status"] == "available"


def test_fhirpath_patch_malformed_is_400(client: TestClient, study_id: str) -> None:
    for document in (
        {"resourceType": "Patient"},
        _fhirpath_patch(_operation("explode", "ImagingStudy.status")),
        _fhirpath_patch(_operation("replace", "ImagingStudy.status.matches('x')", value={"valueCode": "x"})),
        _fhirpath_patch({"name": "operation", "part": [{"name": "type", "valueCode": "replace"}]}),
    ):
        response = client.patch(f"/ImagingStudy/{study_id}", json=document)
        assert response.status_code == 400, document
