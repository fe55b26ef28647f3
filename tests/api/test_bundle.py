"""batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import SHARED

SYNTHEA = SHARED / "data" / "synthea"


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _put(resource: dict[str, Any], **request: str) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def _history_count(client: TestClient) -> int:
    return len(client.get("/_history", params={"_count": 1000}).json().get("entry", []))


def test_transaction_resolves_placeholders_in_every_reference(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    study["subject"] = {"reference": "urn:uuid:6a1c5c54-6ca4-4fd6-9b6a-0b2a1b5f0c11"}
    request = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": "urn:uuid:6a1c5c54-6ca4-4fd6-9b6a-0b2a1b5f0c11"}}  # fmt: skip
    study["basedOn"] = [{"reference": "urn:uuid:0f1e2d3c-0000-4000-8000-000000000002"}]
    bundle = _transaction(
        _post(study),
        _post(patient, "urn:uuid:6a1c5c54-6ca4-4fd6-9b6a-0b2a1b5f0c11"),
        _post(request, "urn:uuid:0f1e2d3c-0000-4000-8000-000000000002"),
    )
    response = client.post("", json=bundle)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert statuses == ["201 Created"] * 3
    study_location, patient_location, request_location = (e["response"]["location"] for e in answer["entry"])
    assert patient_location.startswith("Patient/") and patient_location.endswith("/_history/1")
    patient_ref = patient_location.rsplit("/_history", 1)[0]
    stored_study = client.get("/" + study_location.rsplit("/_history", 1)[0]).json()
    assert stored_study["subject"] == {"reference": patient_ref}
    assert stored_study["basedOn"] == [{"reference": request_location.rsplit("/_history", 1)[0]}]
    stored_request = client.get("/" + request_location.rsplit("/_history", 1)[0]).json()
    assert stored_request["subject"] == {"reference": patient_ref}


def test_transaction_with_one_invalid_entry_stores_nothing(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    broken = copy.deepcopy(study)
    broken["status"] = "finished"
    response = client.post("", json=_transaction(_post(patient), _post(study), _post(broken)))
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert "Bundle.entry[2]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[2]", "Bundle.entry[2].resource.status"]
    assert _history_count(client) == 0


def test_transaction_failing_in_the_database_rolls_everything_back(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    assert client.put("/Patient/p1", json=patient).status_code == 201
    other = dict(patient, id="p2")
    stale = _put(dict(patient, gender="female"), ifMatch='W/"7"')
    response = client.post("", json=_transaction(_put(other), stale))
    assert response.status_code == 412
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/Patient/p2").status_code == 404
    assert client.get("/Patient/p1").json()["gender"] == "male"


def test_transaction_processes_deletes_first_and_answers_in_request_order(
    client: TestClient, patient: dict[str, Any]
) -> None:
    patient["id"] = "p1"
    client.put("/Patient/p1", json=patient)
    bundle = _transaction(
        _put(dict(patient, id="p2")),
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
    )
    response = client.post("", json=bundle)
    # GET runs after DELETE: the read of p1 finds it deleted, so the whole transaction fails with 410.
    assert response.status_code == 410
    assert client.get("/Patient/p1").status_code == 200

    ok = client.post(
        "", json=_transaction(_put(dict(patient, id="p2")), {"request": {"method": "DELETE", "url": "Patient/p1"}})
    )
    assert ok.status_code == 200
    assert [e["response"]["status"] for e in ok.json()["entry"]] == ["201 Created", "204 No Content"]
    assert client.get("/Patient/p1").status_code == 410


def test_transaction_may_not_change_one_resource_twice(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    response = client.post("", json=_transaction(_put(patient), _put(dict(patient, gender="female"))))
    assert response.status_code == 400
    assert _history_count(client) == 0


def test_transaction_reference_to_missing_placeholder_is_400(client: TestClient, study: dict[str, Any]) -> None:
    study["subject"] = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
    response = client.post("", json=_transaction(_post(study)))
    assert response.status_code == 400
    assert _history_count(client) == 0


def test_transaction_prefer_representation_returns_resources(client: TestClient, patient: dict[str, Any]) -> None:
    response = client.post("", json=_transaction(_post(patient)), headers={"Prefer": "return=representation"})
    entry = response.json()["entry"][0]
    assert entry["resource"]["resourceType"] == "Patient"
    assert entry["response"]["etag"] == 'W/"1"'


def test_transaction_patch_entry(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    client.put("/Patient/p1", json=patient)
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "female"}]}]}  # fmt: skip
    response = client.post(
        "", json=_transaction({"resource": patch, "request": {"method": "PATCH", "url": "Patient/p1"}})
    )
    assert response.status_code == 200, response.text
    assert client.get("/Patient/p1").json()["gender"] == "female"


def test_base_url_without_trailing_slash_takes_bundles(client: TestClient, patient: dict[str, Any]) -> None:
    response = client.post("http://testserver/baseR4", json=_transaction(_post(patient)))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("bundle", "status"),
    [
        ({"resourceType": "Patient"}, 400),
        ({"resourceType": "Bundle", "type": "collection"}, 400),
        ({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]}, 400),
        ({"resourceType": "Bundle", "type": "transaction",
          "entry": [{"request": {"method": "POST", "url": "Nope"}}]}, 400),
        ({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Patient"},
          "resource": {"resourceType": "Basic", "code": {"text": "x"}}}]}, 400),
    ],
    ids=["not-a-bundle", "collection", "no-request", "unknown-type", "type-mismatch"],
)  # fmt: skip
def test_malformed_bundles_are_400(client: TestClient, bundle: dict[str, Any], status: int) -> None:
    response = client.post("", json=bundle)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _history_count(client) == 0


def test_batch_entries_succeed_or_fail_on_their_own(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    broken = dict(study, status="finished")
    bundle = _transaction(
        _post(patient),
        _post(broken),
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        _put(dict(patient, id="p9")),
        kind="batch",
    )
    response = client.post("", json=bundle)
    assert response.status_code == 200
    answer = response.json()
    assert answer["type"] == "batch-response"
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "404 Not Found", "201 Created"]
    outcome = answer["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1].resource.status" in outcome["issue"][0]["expression"]
    assert client.get("/Patient/p9").status_code == 200
    assert _history_count(client) == 2


def test_bundle_over_the_entry_limit_is_413(tmp_path: Path, patient: dict[str, Any]) -> None:
    from fhir_imaging.app import create_app
    from fhir_imaging.config import Settings
    from tests.conftest import BASE

    settings = Settings(database=f"sqlite:///{tmp_path / 'limit.db'}", max_bundle_entries=2)
    with TestClient(create_app(settings), base_url=BASE) as small:
        response = small.post("", json=_transaction(_post(patient), _post(patient), _post(patient)))
        assert response.status_code == 413
        assert "entry" not in small.get("/_history").json()


def test_synthea_transaction_bundles_load_with_every_reference_resolved(client: TestClient) -> None:
    files = sorted(SYNTHEA.glob("*.json"))[:4]
    for path in files:
        bundle = orjson.loads(path.read_bytes())
        response = client.post("", json=bundle)
        assert response.status_code == 200, (path.name, response.text[:500])
        answer = response.json()
        assert len(answer["entry"]) == len(bundle["entry"])
        assert all(entry["response"]["status"] == "201 Created" for entry in answer["entry"])
        studies = [
            e["response"]["location"] for e in answer["entry"] if e["response"]["location"].startswith("Imaging")
        ]
        for location in studies:
            stored = client.get("/" + location.rsplit("/_history", 1)[0]).json()
            assert not stored["subject"]["reference"].startswith("urn:uuid:")
            patient = client.get("/" + stored["subject"]["reference"])
            assert patient.status_code == 200 and patient.json()["resourceType"] == "Patient"


MRN = {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}


def _imaging_feed(patient: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    """What a modality broker sends: the patient (created only if new) and a study pointing at it."""
    study = dict(study, subject={"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"})
    study["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}]
    mrn = "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
    study_url = "ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.2.3.4"
    return _transaction(
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": dict(patient, identifier=[MRN]),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": mrn}},
        {"resource": study, "request": {"method": "PUT", "url": study_url}},
    )  # fmt: skip


def test_transaction_with_conditional_create_and_update_is_idempotent(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    first = client.post("", json=_imaging_feed(patient, study))
    assert first.status_code == 200, first.text
    assert [e["response"]["status"] for e in first.json()["entry"]] == ["201 Created", "201 Created"]
    second = client.post("", json=_imaging_feed(patient, study))
    assert second.status_code == 200, second.text
    statuses = [e["response"]["status"] for e in second.json()["entry"]]
    assert statuses == ["200 OK", "200 OK"]
    patient_location = first.json()["entry"][0]["response"]["location"]
    assert second.json()["entry"][0]["response"]["location"] == patient_location
    patients = client.get("/Patient?identifier=12345").json()
    assert len(patients["entry"]) == 1
    studies = client.get("/ImagingStudy?identifier=urn:oid:1.2.3.4").json()["entry"]
    assert len(studies) == 1
    assert studies[0]["resource"]["subject"]["reference"] == patient_location.rsplit("/_history", 1)[0]
    assert studies[0]["resource"]["meta"]["versionId"] == "2"


def test_transaction_resolves_conditional_references(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    patient_id = client.post("/Patient", json=dict(patient, identifier=[MRN])).json()["id"]
    study["subject"] = {"reference": "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345"}
    response = client.post("", json=_transaction(_post(study)))
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    assert client.get(f"/{location}").json()["subject"] == {"reference": f"Patient/{patient_id}"}


def test_transaction_conditional_reference_without_match_stores_nothing(
    client: TestClient, study: dict[str, Any]
) -> None:
    study["subject"] = {"reference": "Patient?identifier=urn:oid:9|nobody"}
    response = client.post("", json=_transaction(_post(dict(study, description="x")), _post(study)))
    assert response.status_code == 412
    assert "Bundle.entry[0]" in response.json()["issue"][0]["expression"]
    assert _history_count(client) == 0


def test_transaction_conditional_delete_and_batch_search(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    client.post("/Patient", json=dict(patient, identifier=[MRN]))
    client.post("/ImagingStudy", json=study)
    deleted = client.post("", json=_transaction({"request": {"method": "DELETE", "url": "Patient?identifier=12345"}}))
    assert deleted.status_code == 200
    assert client.get("/Patient?identifier=12345").json().get("entry") is None
    batch = client.post(
        "",
        json=_transaction(
            {"request": {"method": "GET", "url": "ImagingStudy?modality=CT"}},
            {"request": {"method": "GET", "url": "ImagingStudy?colour=blue"}},
            kind="batch",
        ),
    )
    found, unknown = batch.json()["entry"]
    assert found["response"]["status"] == "200 OK"
    assert found["resource"]["type"] == "searchset" and len(found["resource"]["entry"]) == 1
    assert unknown["response"]["status"] == "200 OK"  # lenient: the unknown parameter is ignored


def test_transaction_conditional_create_with_several_matches_is_412(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    client.post("/Patient", json=dict(patient, identifier=[MRN]))
    client.post("/Patient", json=dict(patient, identifier=[MRN]))
    response = client.post("", json=_imaging_feed(patient, study))
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"][0] == "Bundle.entry[0]"
    assert client.get("/ImagingStudy").json().get("entry") is None
