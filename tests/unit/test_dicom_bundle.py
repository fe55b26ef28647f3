"""The transaction Bundle of one study (fhir_imaging/dicom/bundle.py) and the reading of its answer.

Spec: https://hl7.org/fhir/R4/http.html#transaction, http.html#cond-update, http.html#ccreate,
https://hl7.org/fhir/R4/search.html#escaping.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_imaging.dicom.bundle import (
    StudyWrite,
    Write,
    escape_token,
    identifier_query,
    read_transaction_response,
    search_url,
    study_transaction,
)
from fhir_imaging.dicom.dicomweb import endpoint_for
from fhir_imaging.validation import Validator

UID = {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}
MRN = {"system": "urn:oid:1.2.36.1", "value": "P-7"}
STUDY = {"resourceType": "ImagingStudy", "identifier": [UID], "status": "available"}
PATIENT = {"resourceType": "Patient", "identifier": [MRN], "gender": "male"}


@pytest.mark.parametrize(
    ("identifier", "query"),
    [
        (UID, "identifier=urn:dicom:uid%7Curn:oid:1.2.3"),
        ({"value": "1CT1"}, "identifier=%7C1CT1"),
        ({"system": "urn:x", "value": "a|b,c$d\\e&f g"}, "identifier=urn:x%7Ca%5C%7Cb%5C%2Cc%5C%24d%5C%5Ce%26f%20g"),
        ({"system": "http://pacs:8042/dicom-web", "value": "v"}, "identifier=http://pacs:8042/dicom-web%7Cv"),
    ],
)
def test_identifier_queries_are_escaped_and_encoded(identifier: dict[str, str], query: str) -> None:
    assert identifier_query(identifier) == query
    assert search_url("Patient", identifier) == f"Patient?{query}"


def test_escape_token() -> None:
    assert escape_token("a\\b|c,d$e") == "a\\\\b\\|c\\,d\\$e"


def test_a_new_study_and_patient_are_a_conditional_update_and_a_conditional_create() -> None:
    bundle = study_transaction(StudyWrite(Write(dict(STUDY), UID), Write(dict(PATIENT), MRN)))
    patient_entry, study_entry = bundle["entry"]
    assert bundle["type"] == "transaction"
    assert patient_entry["request"] == {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.36.1%7CP-7"}
    assert patient_entry["fullUrl"].startswith("urn:uuid:")
    assert study_entry["request"] == {
        "method": "POST",
        "url": "ImagingStudy",
        "ifNoneExist": "identifier=urn:dicom:uid%7Curn:oid:1.2.3",
    }
    assert study_entry["resource"]["subject"] == {"reference": patient_entry["fullUrl"]}
    again = study_transaction(StudyWrite(Write(dict(STUDY), UID), Write(dict(PATIENT), MRN)))
    assert again == bundle  # deterministic: the placeholders derive from the identifiers


def test_existing_resources_are_updated_by_id_under_if_match() -> None:
    plan = StudyWrite(Write(dict(STUDY), UID, "s1", "4"), Write(dict(PATIENT), MRN, "p1", "2"))
    patient_entry, study_entry = study_transaction(plan)["entry"]
    assert patient_entry == {
        "resource": {**PATIENT, "id": "p1"},
        "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 'W/"2"'},
    }
    assert study_entry["request"] == {"method": "PUT", "url": "ImagingStudy/s1", "ifMatch": 'W/"4"'}
    assert study_entry["resource"]["id"] == "s1"
    assert study_entry["resource"]["subject"] == {"reference": "Patient/p1"}


def test_an_unchanged_patient_is_only_referenced_and_a_kept_subject_is_not_touched() -> None:
    patient = Write(dict(PATIENT), MRN, "p1", "2", write=False)
    study = {**STUDY, "subject": {"reference": "Patient/someone-else"}}
    plan = StudyWrite(Write(study, UID, "s1", "4"), patient, subject_from_patient=False)
    (study_entry,) = study_transaction(plan)["entry"]
    assert study_entry["resource"]["subject"] == {"reference": "Patient/someone-else"}


def test_the_endpoint_comes_first_and_the_study_points_at_it() -> None:
    endpoint = endpoint_for("http://127.0.0.1:8042/dicom-web/")
    write = Write(endpoint.resource, endpoint.identifier)
    bundle = study_transaction(StudyWrite(Write(dict(STUDY), UID), Write(dict(PATIENT), MRN), write))
    endpoint_entry = bundle["entry"][0]
    assert endpoint_entry["request"] == {
        "method": "PUT",
        "url": "Endpoint?identifier=urn:ietf:rfc:3986%7Chttp://127.0.0.1:8042/dicom-web",
    }
    assert endpoint_entry["resource"]["connectionType"] == {
        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
        "code": "dicom-wado-rs",
    }
    assert endpoint_entry["resource"]["address"] == "http://127.0.0.1:8042/dicom-web"
    assert bundle["entry"][-1]["resource"]["endpoint"] == [{"reference": endpoint_entry["fullUrl"]}]
    known = Write(endpoint.resource, endpoint.identifier, "e1", "1", write=False)
    bundle = study_transaction(StudyWrite(Write(dict(STUDY), UID), Write(dict(PATIENT), MRN), known))
    assert [entry["resource"]["resourceType"] for entry in bundle["entry"]] == ["Patient", "ImagingStudy"]
    assert bundle["entry"][-1]["resource"]["endpoint"] == [{"reference": "Endpoint/e1"}]


def test_the_bundle_and_everything_in_it_is_valid_fhir() -> None:
    endpoint = endpoint_for("http://127.0.0.1:8042/dicom-web")
    study = {**STUDY, "numberOfSeries": 0, "numberOfInstances": 0}
    plan = StudyWrite(Write(study, UID), Write(dict(PATIENT), MRN), Write(endpoint.resource, endpoint.identifier))
    bundle = study_transaction(plan)
    issues = [issue for issue in Validator.load().validate(bundle) if issue.severity in ("error", "fatal")]
    assert issues == []


def response(*entries: tuple[str, str | None]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": status, **({"location": loc} if loc else {})}} for status, loc in entries],
    }


def test_reading_the_transaction_response() -> None:
    bundle = study_transaction(StudyWrite(Write(dict(STUDY), UID), Write(dict(PATIENT), MRN)))
    answer = response(
        ("201 Created", "Patient/p9/_history/1"), ("201 Created", "http://x/baseR4/ImagingStudy/s9/_history/1")
    )
    result = read_transaction_response(bundle, answer)
    assert (result.entries["Patient"].id, result.entries["Patient"].status) == ("p9", 201)
    assert (result.entries["ImagingStudy"].id, result.entries["ImagingStudy"].status) == ("s9", 201)
    existing = read_transaction_response(bundle, response(("200 OK", "Patient/p9/_history/2"), ("200 OK", None)))
    assert existing.entries["ImagingStudy"].status == 200 and existing.entries["ImagingStudy"].id is None
