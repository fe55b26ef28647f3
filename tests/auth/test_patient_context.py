"""Patient context: a token with ``patient/`` scopes and a ``patient`` claim sees and writes only that patient's
compartment. Other patients' resources are 404 (their existence is not confirmed), searches are filtered, includes
never leak, writes must stay inside, and a transaction touching another patient is refused whole. A property test
runs random searches and checks every returned resource against an independent compartment check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BASE

PATIENTS = ("p1", "p2", "p3")


def _study(study_id: str, patient: str, modality: str, status: str = "available") -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}],
    }


def _report(report_id: str, patient: str, study: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": "final",
        "code": {"text": "CT report"},
        "subject": {"reference": f"Patient/{patient}"},
        "imagingStudy": [{"reference": f"ImagingStudy/{study}"}],
    }


RESOURCES: list[dict[str, Any]] = [
    *({"resourceType": "Patient", "id": patient, "name": [{"family": "Smith"}]} for patient in PATIENTS),
    {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Jones"}]},
    {**_study("s1", "p1", "CT"), "basedOn": [{"reference": "ServiceRequest/sr2"}]},  # p1's study, p2's order
    {
        "resourceType": "ServiceRequest",
        "id": "sr2",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p2"},
    },
    _study("s2", "p2", "CT"),
    _study("s3", "p1", "MR", "registered"),
    _study("s4", "p3", "MR"),
    _report("r1", "p1", "s1"),
    _report("r2", "p2", "s2"),
    _report("r3", "p2", "s1"),  # another patient's report pointing at p1's study
]


def _patient_of(resource: dict[str, Any]) -> str | None:
    """The independent check: the patient a test resource belongs to, read from the JSON as written here."""
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    subject = resource.get("subject", {}).get("reference", "")
    return subject.removeprefix("Patient/") if subject.startswith("Patient/") else None


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = tmp_path_factory.mktemp("patient-context") / "pc.db"
    settings = Settings(database=f"sqlite:///{database}", auth_issuer=issuer.url, auth_audience=BASE)
    with TestClient(create_app(settings), base_url=BASE) as client:
        admin = {"Authorization": f"Bearer {issuer.token('system/*.cruds')}"}
        for resource in RESOURCES:
            response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=admin)
            assert response.status_code in (200, 201), response.text
        yield client


def _as(issuer: Issuer, scope: str = "patient/*.rs", patient: str = "p1") -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(scope, patient=patient)}"}


def test_reads_of_another_patients_resources_are_404(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer)
    assert server.get("/ImagingStudy/s1", headers=headers).status_code == 200
    assert server.get("/Patient/p1", headers=headers).status_code == 200
    for path in ("/ImagingStudy/s2", "/Patient/p2", "/DiagnosticReport/r3", "/ImagingStudy/s2/_history/1",
                 "/ImagingStudy/s2/_history", "/ImagingStudy/nothing"):  # fmt: skip
        response = server.get(path, headers=headers)
        assert response.status_code == 404, (path, response.text)
    assert server.get("/ImagingStudy/_history", headers=headers).status_code == 403
    assert server.get("/Practitioner/dr1", headers=headers).status_code == 404  # in no patient's compartment
    assert server.get("/Practitioner", headers=headers).status_code == 403


def test_searches_and_includes_stay_in_the_compartment(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer)

    def found(query: str) -> list[str]:
        response = server.get(query, headers=headers)
        assert response.status_code == 200, response.text
        entries = response.json().get("entry", [])
        return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries)

    assert found("/ImagingStudy") == ["ImagingStudy/s1", "ImagingStudy/s3"]
    assert found("/ImagingStudy?modality=CT&_include=ImagingStudy:subject") == ["ImagingStudy/s1", "Patient/p1"]
    assert found("/ImagingStudy?_include=ImagingStudy:basedon") == ["ImagingStudy/s1", "ImagingStudy/s3"]
    assert found("/Patient?_revinclude=DiagnosticReport:subject") == ["DiagnosticReport/r1", "Patient/p1"]
    assert found("/Patient?_revinclude=ImagingStudy:subject") == ["ImagingStudy/s1", "ImagingStudy/s3", "Patient/p1"]
    assert found("/Patient") == ["Patient/p1"]
    assert found("/Patient/p2/ImagingStudy") == []


def test_writes_must_stay_in_the_compartment(server: TestClient, issuer: Issuer) -> None:
    headers = {**_as(issuer, "patient/*.cruds"), "Content-Type": "application/fhir+json"}
    outside = _study("new", "p2", "CT")
    del outside["id"]
    assert server.post("/ImagingStudy", json=outside, headers=headers).status_code == 403
    inside = {**outside, "subject": {"reference": "Patient/p1"}}
    assert server.post("/ImagingStudy", json=inside, headers=headers).status_code == 201
    assert server.put("/ImagingStudy/s2", json=_study("s2", "p1", "CT"), headers=headers).status_code == 404
    assert server.put("/ImagingStudy/s3", json=_study("s3", "p2", "CT"), headers=headers).status_code == 403
    assert server.delete("/ImagingStudy/s2", headers=headers).status_code == 404
    patch = [{"op": "replace", "path": "/subject/reference", "value": "Patient/p2"}]
    patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
    assert server.patch("/ImagingStudy/s3", json=patch, headers=patch_headers).status_code == 403
    assert server.patch("/ImagingStudy/s2", json=patch, headers=patch_headers).status_code == 404
    admin = {"Authorization": f"Bearer {issuer.token('system/*.rs')}"}
    assert server.get("/ImagingStudy/s2", headers=admin).json()["subject"]["reference"] == "Patient/p2"


def test_a_transaction_touching_another_patient_is_refused_whole(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "patient/*.cruds")
    mine, theirs = _study("t1", "p1", "US"), _study("t2", "p2", "US")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": mine, "request": {"method": "PUT", "url": "ImagingStudy/t1"}},
            {"resource": theirs, "request": {"method": "PUT", "url": "ImagingStudy/t2"}},
        ],
    }
    refused = server.post("/", json=bundle, headers=headers)
    assert refused.status_code == 403, refused.text
    admin = {"Authorization": f"Bearer {issuer.token('system/*.rs')}"}
    assert server.get("/ImagingStudy/t1", headers=admin).status_code == 404  # nothing of it was written
    reads = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "ImagingStudy/s2"}},
                       {"request": {"method": "GET", "url": "ImagingStudy?modality=CT"}}]}  # fmt: skip
    answered = server.post("/", json=reads, headers=headers).json()["entry"]
    assert answered[0]["response"]["status"].startswith("404")
    found = answered[1]["resource"]["entry"]
    assert "s1" in {e["resource"]["id"] for e in found}
    assert {e["resource"]["subject"]["reference"] for e in found} == {"Patient/p1"}


QUERIES = st.tuples(
    st.sampled_from(["ImagingStudy", "DiagnosticReport", "Patient", "ServiceRequest"]),
    st.lists(
        st.sampled_from(
            [
                ("status", "available"),
                ("status", "final"),
                ("modality", "CT"),
                ("modality", "MR"),
                ("_include", "ImagingStudy:subject"),
                ("_include", "ImagingStudy:basedon"),
                ("_include", "DiagnosticReport:subject"),
                ("_include:iterate", "ServiceRequest:subject"),
                ("_revinclude", "ImagingStudy:subject"),
                ("_revinclude", "DiagnosticReport:subject"),
                ("subject:Patient.name", "Smith"),
                ("_has:ImagingStudy:subject:modality", "CT"),
                ("_id", "s2"),
                ("_id", "p2"),
                ("_id", "r3"),
                ("_count", "1"),
            ]
        ),
        max_size=4,
    ),
    st.sampled_from(PATIENTS),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=QUERIES)
def test_random_searches_never_return_another_patients_resources(
    server: TestClient, issuer: Issuer, query: tuple[str, list[tuple[str, str]], str]
) -> None:
    resource_type, params, patient = query
    response = server.get(f"/{resource_type}", params=params, headers=_as(issuer, patient=patient))
    assert response.status_code in (200, 400), response.text  # 400: a parameter that does not apply to the type
    if response.status_code == 200:
        for entry in response.json().get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] != "OperationOutcome":
                assert _patient_of(resource) == patient, (query, resource)


def test_conditional_references_resolve_inside_the_compartment(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "patient/*.cruds")
    study = _study("cr1", "p1", "US")

    def transaction(reference: str) -> Any:
        entry = {**study, "subject": {"reference": reference}}
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"resource": entry, "request": {"method": "PUT", "url": "ImagingStudy/cr1"}}]}  # fmt: skip
        return server.post("/", json=bundle, headers=headers)

    assert transaction("Patient?_id=p2").status_code == 412  # another patient's is not found
    resolved = transaction("Patient?name=Smith")  # three Smiths, one of them in the compartment
    assert resolved.status_code == 200, resolved.text
    admin = {"Authorization": f"Bearer {issuer.token('system/*.rs')}"}
    assert server.get("/ImagingStudy/cr1", headers=admin).json()["subject"]["reference"] == "Patient/p1"
