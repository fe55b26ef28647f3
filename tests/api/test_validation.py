"""Every write path validates before storing: precise OperationOutcomes, nothing stored; and $validate."""

from __future__ import annotations

import random
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.unit.test_validation_mutations import all_cases, example_files


def _issues(response: Any) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def _expressions(response: Any) -> set[str]:
    """Where the errors are (warnings, e.g. dom-6 on a resource without narrative, left aside)."""
    errors = [issue for issue in _issues(response) if issue["severity"] in ("error", "fatal")]
    return {expression for issue in errors for expression in issue.get("expression", [])}


def _nothing_stored(client: TestClient) -> None:
    assert "entry" not in client.get("/_history").json()


def test_bad_status_is_422_naming_the_element(client: TestClient, study: dict[str, Any]) -> None:
    study["status"] = "finished"
    response = client.post("/ImagingStudy", json=study)
    assert response.status_code == 422
    assert _expressions(response) == {"ImagingStudy.status"}
    assert _issues(response)[0]["code"] == "code-invalid"
    _nothing_stored(client)


def test_missing_subject_is_422_naming_the_element(client: TestClient, study: dict[str, Any]) -> None:
    del study["subject"]
    response = client.post("/ImagingStudy", json=study)
    assert response.status_code == 422
    assert _expressions(response) == {"ImagingStudy.subject"}
    assert _issues(response)[0]["code"] == "required"
    _nothing_stored(client)


def test_unknown_element_is_400_naming_its_path(client: TestClient, study: dict[str, Any]) -> None:
    study["series"] = [{"uid": "1.2.3", "modality": {"code": "CT"}, "colour": "blue"}]
    response = client.post("/ImagingStudy", json=study)
    assert response.status_code == 400
    assert _expressions(response) == {"ImagingStudy.series[0].colour"}
    _nothing_stored(client)


def test_wrong_type_is_400_naming_the_element(client: TestClient, study: dict[str, Any]) -> None:
    study["numberOfSeries"] = "three"
    response = client.post("/ImagingStudy", json=study)
    assert response.status_code == 400
    assert _expressions(response) == {"ImagingStudy.numberOfSeries"}
    _nothing_stored(client)


def test_all_issues_are_reported_together(client: TestClient, study: dict[str, Any]) -> None:
    study["status"] = "finished"
    del study["subject"]
    study["numberOfSeries"] = -1
    response = client.post("/ImagingStudy", json=study)
    assert response.status_code == 400
    assert _expressions(response) >= {"ImagingStudy.status", "ImagingStudy.subject", "ImagingStudy.numberOfSeries"}


def test_invalid_update_changes_nothing(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    assert client.put("/Patient/p1", json=patient).status_code == 201
    response = client.put("/Patient/p1", json=dict(patient, gender="unknown-gender"))
    assert response.status_code == 422
    assert _expressions(response) == {"Patient.gender"}
    current = client.get("/Patient/p1").json()
    assert current["meta"]["versionId"] == "1" and current["gender"] == "male"


@pytest.mark.parametrize("name", ["ImagingStudy-example.json", "ImagingStudy-example-xr.json", "Patient-example.json"])
def test_broken_variants_of_official_examples_are_refused_and_not_stored(client: TestClient, name: str) -> None:
    assert name in example_files()
    # The id is left out: a create ignores it (so a broken id cannot be refused there).
    cases = [case for case in all_cases(name) if not case[3].endswith(".id")]
    for label, broken, _code, expression in random.Random(name).sample(cases, min(25, len(cases))):
        broken = dict(broken)
        broken.pop("id", None)
        response = client.post(f"/{broken['resourceType']}", json=broken)
        assert response.status_code in (400, 422), label
        assert any(expression in issue.get("expression", []) for issue in _issues(response)), (label, expression)
    _nothing_stored(client)


def test_validate_operation_reports_issues_with_200_and_stores_nothing(
    client: TestClient, study: dict[str, Any]
) -> None:
    study["status"] = "finished"
    response = client.post("/ImagingStudy/$validate", json=study)
    assert response.status_code == 200
    assert _expressions(response) == {"ImagingStudy.status"}
    _nothing_stored(client)


def test_validate_operation_on_valid_resource_is_informational(client: TestClient, study: dict[str, Any]) -> None:
    study["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">CT chest</div>'}  # dom-6
    response = client.post("/ImagingStudy/$validate", json=study)
    assert response.status_code == 200
    assert [issue["severity"] for issue in _issues(response)] == ["information"]


def test_validate_operation_takes_parameters_wrapper(client: TestClient, study: dict[str, Any]) -> None:
    del study["subject"]
    study["id"] = "img-1"
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": study}, {"name": "mode", "valueCode": "update"}],
    }
    response = client.post("/ImagingStudy/img-2/$validate", json=parameters)
    assert response.status_code == 200
    assert _expressions(response) == {"ImagingStudy.subject", "ImagingStudy.id"}
    _nothing_stored(client)


def test_validate_operation_with_wrong_type_is_400(client: TestClient, patient: dict[str, Any]) -> None:
    assert client.post("/ImagingStudy/$validate", json=patient).status_code == 400


def test_contained_resource_with_an_invalid_id_is_refused_and_not_stored(
    client: TestClient, patient: dict[str, Any]
) -> None:
    """resource.html#id: every Resource.id, contained ones included, is an id ([A-Za-z0-9-.]{1,64})."""
    patient["contained"] = [{"resourceType": "Organization", "id": "org_1", "name": "X"}]
    response = client.post("/Patient", json=patient)
    assert response.status_code == 400
    assert _expressions(response) == {"Patient.contained[0].id"}
    _nothing_stored(client)
    validated = client.post("/Patient/$validate", json=patient)
    assert validated.status_code == 200 and _expressions(validated) == {"Patient.contained[0].id"}


def test_dates_that_do_not_exist_and_unsafe_narratives_are_refused(client: TestClient, patient: dict[str, Any]) -> None:
    patient["birthDate"] = "2023-02-29"
    patient["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script/></div>'}
    response = client.post("/Patient", json=patient)
    assert response.status_code == 400
    assert _expressions(response) == {"Patient.birthDate", "Patient.text.div"}
    _nothing_stored(client)


def test_bundle_with_a_relative_full_url_is_refused_as_a_resource_and_as_a_transaction(client: TestClient) -> None:
    """bundle.html#bundle-unique: fullUrl is an absolute URL (or urn:uuid: / urn:oid:)."""
    entry = {"fullUrl": "Patient/p1", "resource": {"resourceType": "Patient", "id": "p1"}}
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [entry]}
    response = client.post("/Bundle", json=collection)
    assert response.status_code == 422 and _expressions(response) == {"Bundle.entry[0].fullUrl"}
    validated = client.post("/Bundle/$validate", json=collection)
    assert validated.status_code == 200 and _expressions(validated) == {"Bundle.entry[0].fullUrl"}
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{**entry, "request": {"method": "PUT", "url": "Patient/p1"}}],
    }
    response = client.post("/", json=transaction)
    assert response.status_code == 400 and _expressions(response) == {"Bundle.entry[0].fullUrl"}
    _nothing_stored(client)
