"""Invariants through the API: $validate reports each broken constraint; create and update refuse it (422), storing
nothing; a warning-severity constraint (dom-6) never refuses a write.

Spec: https://hl7.org/fhir/R4/resource-operation-validate.html, https://hl7.org/fhir/R4/http.html#create and
https://hl7.org/fhir/R4/conformance-rules.html#constraints.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.unit.test_validation_invariants import CASES, broken, example

Case = tuple[str, Any, Any, str, str]


def _issues(response: Any) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def _names(issue: dict[str, Any], key: str, expression: str) -> bool:
    return f"constraint {key} " in issue["diagnostics"] and issue.get("expression") == [expression]


def _nothing_stored(client: TestClient) -> None:
    assert "entry" not in client.get("/_history").json()


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_validate_names_the_constraint_and_the_element(client: TestClient, case: Case) -> None:
    _, _, _, key, expression = case
    resource = broken(case)
    response = client.post(f"/{resource['resourceType']}/$validate", json=resource)
    assert response.status_code == 200
    found = [i for i in _issues(response) if _names(i, key, expression)]
    assert found and found[0]["severity"] == "error" and found[0]["code"] == "invariant", _issues(response)
    _nothing_stored(client)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_create_refuses_a_broken_invariant_and_stores_nothing(client: TestClient, case: Case) -> None:
    _, _, _, key, expression = case
    resource = broken(case)
    resource.pop("id", None)
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 422, response.text
    assert any(_names(i, key, expression) for i in _issues(response)), _issues(response)
    _nothing_stored(client)


def test_update_refuses_a_broken_invariant_and_changes_nothing(client: TestClient) -> None:
    study = example("ImagingStudy-example.json")
    assert client.put(f"/ImagingStudy/{study['id']}", json=study).status_code == 201
    study["identifier"][0]["period"] = {"start": "2021-05-01", "end": "2021-04-30"}
    response = client.put(f"/ImagingStudy/{study['id']}", json=study)
    assert response.status_code == 422
    assert any(_names(i, "per-1", "ImagingStudy.identifier[0].period") for i in _issues(response))
    current = client.get(f"/ImagingStudy/{study['id']}").json()
    assert current["meta"]["versionId"] == "1" and "period" not in current["identifier"][0]


def test_a_transaction_with_a_broken_entry_stores_nothing(client: TestClient) -> None:
    study = example("ImagingStudy-example.json")
    study["subject"] = {"reference": "#nowhere"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": example("Patient-example.json"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": study, "request": {"method": "POST", "url": "ImagingStudy"}},
        ],
    }
    response = client.post("/", json=bundle)
    assert response.status_code in (400, 422)
    assert any("constraint ref-1 " in i["diagnostics"] for i in _issues(response))
    _nothing_stored(client)


def test_a_warning_constraint_never_refuses_a_write(client: TestClient) -> None:
    study = example("ImagingStudy-example.json")
    del study["text"], study["id"]
    response = client.post("/ImagingStudy/$validate", json=study)
    assert [(i["severity"], i["code"], i["expression"]) for i in _issues(response)] == [
        ("warning", "invariant", ["ImagingStudy"])
    ]
    assert "dom-6" in _issues(response)[0]["diagnostics"]
    assert client.post("/ImagingStudy", json=study).status_code == 201
