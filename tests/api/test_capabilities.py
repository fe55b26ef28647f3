"""capabilities: GET /metadata (https://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

from starlette.testclient import TestClient

from fhir_imaging.fhir.registry import load_registry


def test_metadata_is_an_r4_capability_statement(client: TestClient) -> None:
    response = client.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert "application/fhir+json" in statement["format"]
    assert statement["implementation"]["url"] == "http://testserver/baseR4"


def test_metadata_lists_every_resource_type_with_its_interactions(client: TestClient) -> None:
    statement = client.get("/metadata").json()
    resources = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    assert set(resources) == set(load_registry().resource_types)
    codes = {item["code"] for item in resources["ImagingStudy"]["interaction"]}
    assert {"read", "vread", "update", "delete", "history-instance", "history-type", "create"} <= codes
    assert resources["ImagingStudy"]["versioning"] == "versioned-update"
    assert resources["ImagingStudy"]["updateCreate"] is True
    system = {item["code"] for item in statement["rest"][0]["interaction"]}
    assert "history-system" in system


def test_metadata_interactions_are_routes_that_answer(client: TestClient) -> None:
    statement = client.get("/metadata").json()
    codes = {item["code"] for item in statement["rest"][0]["resource"][0]["interaction"]}
    probes = {
        "read": ("GET", "/Patient/x"),
        "vread": ("GET", "/Patient/x/_history/1"),
        "update": ("PUT", "/Patient/x"),
        "patch": ("PATCH", "/Patient/x"),
        "delete": ("DELETE", "/Patient/x"),
        "history-instance": ("GET", "/Patient/x/_history"),
        "history-type": ("GET", "/Patient/_history"),
        "create": ("POST", "/Patient"),
        "search-type": ("GET", "/Patient"),
    }
    for code in codes:
        method, path = probes[code]
        assert client.request(method, path).status_code != 405, code


def test_metadata_lists_the_validate_operation(client: TestClient) -> None:
    statement = client.get("/metadata").json()
    study = next(entry for entry in statement["rest"][0]["resource"] if entry["type"] == "ImagingStudy")
    assert {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"} in study[
        "operation"
    ]
