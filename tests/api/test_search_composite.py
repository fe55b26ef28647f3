"""Composite search parameters through the API, on both backends (https://hl7.org/fhir/R4/search.html#composite)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from tests.api.test_search import _put, ids

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def component(code: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


def blood_pressure(resource_id: str, systolic: float, diastolic: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "component": [component("8480-6", systolic), component("8462-4", diastolic)],
    }


@pytest.fixture
def observations(client: TestClient) -> TestClient:
    _put(client, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chen"}]})
    _put(client, blood_pressure("high", 150, 95))
    _put(client, blood_pressure("crossed", 90, 130))  # systolic low, diastolic over 100
    _put(client, blood_pressure("normal", 118, 76))
    _put(
        client,
        {
            "resourceType": "Observation",
            "id": "weight",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"},
        },
    )
    return client


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"component-code-value-quantity={LOINC}|8480-6$gt100", ["high", "normal"]),
        (f"component-code-value-quantity={LOINC}|8480-6$gt140|{UCUM}|mm[Hg]", ["high"]),
        ("component-code-value-quantity=8480-6$gt100||mmHg", ["high", "normal"]),
        ("component-code-value-quantity=8480-6$gt100||kg", []),
        ("component-code-value-quantity=8462-4$gt100", ["crossed"]),
        ("component-code-value-quantity=8480-6$gt140,8462-4$gt100", ["high", "crossed"]),
        ("component-code-value-quantity=8480-6$gt100&component-code-value-quantity=8462-4$lt80", ["normal"]),
        ("combo-code-value-quantity=29463-7$ge72.5", ["weight"]),
        ("combo-code-value-quantity=8480-6$lt100", ["crossed"]),
        ("code-value-quantity=29463-7$72.5|http://unitsofmeasure.org|kg", ["weight"]),
        ("code-value-quantity=85354-9$gt100", []),  # the code is the Observation's, the values its components'
        ("code-value-quantity:missing=true", ["high", "crossed", "normal"]),
        ("component-code-value-quantity:missing=false", ["high", "crossed", "normal"]),
        ("patient.family=chen&component-code-value-quantity=8462-4$gt90", ["high", "crossed"]),
    ],
)
def test_composite_search(observations: TestClient, query: str, expected: list[str]) -> None:
    assert ids(observations, f"/Observation?{query.replace('|', '%7C').replace('$', '%24')}") == expected


def test_a_composite_in_has_and_post(observations: TestClient) -> None:
    assert ids(observations, "/Patient?_has:Observation:subject:component-code-value-quantity=8480-6%24gt140") == ["p1"]
    response = observations.post("/Observation/_search", data={"component-code-value-quantity": "8462-4$gt100"})
    assert response.status_code == 200
    assert [entry["resource"]["id"] for entry in response.json()["entry"]] == ["crossed"]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("component-code-value-quantity", "8480-6", "takes 2"),
        ("component-code-value-quantity", "8480-6$100$1", "takes 2"),
        ("component-code-value-quantity", "8480-6$high", "component 2 (quantity)"),
        ("component-code-value-quantity", "$100", "component 1 (token)"),
        ("code-value-date", "8480-6$2024-13", "component 2 (date)"),
        ("component-code-value-quantity:exact", "8480-6$100", "modifier"),
    ],
)
def test_malformed_composites_are_a_400_naming_the_parameter(
    client: TestClient, name: str, value: str, words: str
) -> None:
    response = client.get("/Observation", params={name: value})
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["expression"] == [name]
    assert words in issue["diagnostics"]


def test_sorting_by_a_composite_is_a_400(client: TestClient) -> None:
    response = client.get("/Observation", params={"_sort": "code-value-quantity"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_sort"]


def test_the_capability_statement_lists_the_composites(client: TestClient) -> None:
    statement = client.get("/metadata").json()
    resources = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    params = {item["name"]: item for item in resources["Observation"]["searchParam"]}
    assert params["component-code-value-quantity"]["type"] == "composite"
    assert params["component-code-value-quantity"]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/Observation-component-code-value-quantity"
    )
    assert "characteristic-value" in {item["name"] for item in resources["Group"]["searchParam"]}
    assert not any(item["type"] == "special" for entry in resources.values() for item in entry.get("searchParam", ()))


def test_an_update_replaces_the_composite_rows_and_a_delete_removes_them(observations: TestClient) -> None:
    query = "/Observation?component-code-value-quantity=8462-4%24gt100"
    assert ids(observations, query) == ["crossed"]
    _put(observations, blood_pressure("crossed", 90, 60))
    assert ids(observations, query) == []
    _put(observations, blood_pressure("normal", 118, 101))
    assert ids(observations, query) == ["normal"]
    assert observations.delete("/Observation/normal").status_code in (200, 204)
    assert ids(observations, query) == []


def test_reindex_fills_the_rows_of_resources_indexed_without_them(settings: Settings) -> None:
    """A database whose resources were written before composites were indexed (their rows removed here, as after
    the migration that made the tables): ``reindex`` writes them."""
    store = open_store(settings, load_registry())
    try:
        store.update("Observation", "bp", blood_pressure("bp", 150, 95))

        def empty(tx: Any) -> None:
            for kind in ("token", "quantity"):
                tx.conn.execute(f"DELETE FROM spidx_composite_{kind}")

        store.transact(empty)
        from fhir_imaging.search.execute import run_search
        from fhir_imaging.search.query import parse_search

        request = parse_search(load_registry(), ("Observation",), [("component-code-value-quantity", "8480-6$gt100")])
        assert [hit.id for hit in run_search(store, request, ("",)).matches] == []
        assert store.reindex() == 1
        assert [hit.id for hit in run_search(store, request, ("",)).matches] == ["bp"]
    finally:
        store.close()


def test_document_reference_relationship_pairs_the_target_with_the_relation(client: TestClient) -> None:
    """R4 gives each component of ``relationship`` the other's expression; our additions put them right."""
    _put(client, {"resourceType": "DocumentReference", "id": "old", "status": "superseded", "content": [_CONTENT]})
    _put(
        client,
        {
            "resourceType": "DocumentReference",
            "id": "new",
            "status": "current",
            "content": [_CONTENT],
            "relatesTo": [
                {"code": "replaces", "target": {"reference": "DocumentReference/old"}},
                {"code": "appends", "target": {"reference": "DocumentReference/other"}},
            ],
        },
    )
    assert ids(client, "/DocumentReference?relationship=DocumentReference/old%24replaces") == ["new"]
    assert ids(client, "/DocumentReference?relationship=old%24replaces,other%24signs") == ["new"]
    assert ids(client, "/DocumentReference?relationship=DocumentReference/old%24appends") == []  # another element's
    statement = client.get("/metadata").json()
    entry = next(item for item in statement["rest"][0]["resource"] if item["type"] == "DocumentReference")
    relationship = next(item for item in entry["searchParam"] if item["name"] == "relationship")
    assert relationship["definition"] == "urn:fhir-imaging:SearchParameter:DocumentReference-relationship"


_CONTENT = {"attachment": {"contentType": "text/plain", "url": "http://example.org/doc"}}
