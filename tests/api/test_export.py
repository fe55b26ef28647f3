"""Bulk Data export ($export, https://hl7.org/fhir/uv/bulkdata/STU2/export.html) on both backends: each kick-off
form and parameter, the status and manifest, the files, cancellation, a consistent snapshot while writes go on, and
a job whose runner died finished by another."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.export import jobs
from fhir_imaging.export.request import ExportRequest
from fhir_imaging.export.runner import ExportRunner
from fhir_imaging.storage.sqlstore import SqlStore
from tests.conftest import BASE

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(replace(settings, export_dir=str(tmp_path / "exports"))), base_url=BASE) as client:
        yield client


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    answer = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


def study(study_id: str, patient: str, modality: str = "CT") -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "subject": {"reference": f"Patient/{patient}"},
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}],
        "endpoint": [{"reference": "Endpoint/pacs"}],
    }


def seed(client: TestClient) -> None:
    for patient in ("p1", "p2", "p3"):
        put(client, {"resourceType": "Patient", "id": patient, "name": [{"family": patient.upper()}]})
    put(client, {"resourceType": "Endpoint", "id": "pacs", "status": "active", "address": "http://pacs/dicom-web",
                 "connectionType": {"code": "dicom-wado-rs"}, "payloadType": [{"text": "DICOM"}]})  # fmt: skip
    for number, (patient, modality) in enumerate([("p1", "CT"), ("p1", "MR"), ("p2", "CT"), ("p3", "US")]):
        put(client, study(f"s{number}", patient, modality))
    put(client, {"resourceType": "Group", "id": "cohort", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p3"},
                                                                    "inactive": True}]})  # fmt: skip


def kick_off(client: TestClient, path: str = "/$export", **params: str) -> str:
    answer = client.get(path, params=params, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    status: str = answer.headers["content-location"]
    assert status.startswith(f"{BASE}/$export-status/")
    return status.removeprefix(BASE)


def finished(client: TestClient, status: str, within: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = client.get(status)
        if answer.status_code == 200:
            manifest: dict[str, Any] = answer.json()
            return manifest
        assert answer.status_code == 202, answer.text
        assert answer.headers["retry-after"] and "x-progress" in answer.headers
        time.sleep(0.1)
    raise AssertionError("the export did not finish in time")


def exported(client: TestClient, manifest: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """type → id → resource, from every output file (whose counts must be right)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for output in manifest["output"]:
        answer = client.get(output["url"].removeprefix(BASE))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in answer.content.splitlines()]
        assert len(lines) == output["count"]
        for resource in lines:
            assert resource["resourceType"] == output["type"]
            found.setdefault(output["type"], {})[resource["id"]] = resource
    return found


def ids(found: dict[str, dict[str, dict[str, Any]]]) -> dict[str, set[str]]:
    return {name: set(resources) for name, resources in found.items()}


# --- kick-offs ------------------------------------------------------------------------------------------------------


def test_a_system_export_holds_every_resource(server: TestClient) -> None:
    seed(server)
    manifest = finished(server, kick_off(server))
    assert manifest["request"] == f"{BASE}/$export"
    assert manifest["requiresAccessToken"] is False and manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z")
    found = exported(server, manifest)
    assert ids(found) == {"Patient": {"p1", "p2", "p3"}, "Endpoint": {"pacs"}, "Group": {"cohort"},
                          "ImagingStudy": {"s0", "s1", "s2", "s3"}}  # fmt: skip
    assert found["ImagingStudy"]["s0"] == server.get("/ImagingStudy/s0").json()  # as stored, meta included


def test_type_since_type_filter_and_elements(server: TestClient) -> None:
    seed(server)
    only = exported(server, finished(server, kick_off(server, _type="ImagingStudy,Endpoint")))
    assert ids(only) == {"ImagingStudy": {"s0", "s1", "s2", "s3"}, "Endpoint": {"pacs"}}
    since = server.get("/Group/cohort").json()["meta"]["lastUpdated"]  # the last write of the seed
    time.sleep(0.01)  # the next writes get a later lastUpdated (milliseconds)
    put(server, study("s1", "p1", "CT"))
    put(server, study("s9", "p2", "MR"))
    recent = exported(server, finished(server, kick_off(server, _since=since)))
    assert ids(recent) == {"ImagingStudy": {"s1", "s9"}}
    filtered = exported(server, finished(server, kick_off(
        server, _type="ImagingStudy", _typeFilter="ImagingStudy?modality=MR")))  # fmt: skip
    searched = {
        entry["resource"]["id"] for entry in server.get("/ImagingStudy", params={"modality": "MR"}).json()["entry"]
    }
    assert ids(filtered) == {"ImagingStudy": searched} and searched == {"s9"}
    subset = exported(server, finished(server, kick_off(server, _type="ImagingStudy", _elements="ImagingStudy.status")))
    resource = subset["ImagingStudy"]["s0"]
    assert set(resource) == {"resourceType", "id", "meta", "status", "subject"}  # subject: mandatory (1..1)
    assert resource["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_patient_and_group_exports_keep_to_the_compartments(server: TestClient) -> None:
    seed(server)
    patients = exported(server, finished(server, kick_off(server, "/Patient/$export")))
    # the Group is in its members' compartments (CompartmentDefinition Patient: Group.member); the Endpoint in none
    assert ids(patients) == {
        "Patient": {"p1", "p2", "p3"},
        "ImagingStudy": {"s0", "s1", "s2", "s3"},
        "Group": {"cohort"},
    }
    group = exported(server, finished(server, kick_off(server, "/Group/cohort/$export")))
    assert ids(group) == {"Patient": {"p1"}, "ImagingStudy": {"s0", "s1"}, "Group": {"cohort"}}  # p3: inactive
    assert server.get("/Group/unknown/$export", headers=ASYNC).status_code == 404


def test_a_post_kick_off_with_parameters(server: TestClient) -> None:
    seed(server)
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,ImagingStudy"},
        {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
    ]}  # fmt: skip
    as_form = server.post("/Patient/$export", content=b"_type=Patient", headers={**ASYNC, "Content-Type": "text/plain"})
    assert as_form.status_code == 415
    answer = server.post("/Patient/$export", json=parameters, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    found = exported(server, finished(server, answer.headers["content-location"].removeprefix(BASE)))
    assert ids(found) == {"Patient": {"p2"}, "ImagingStudy": {"s2"}}


@pytest.mark.parametrize(
    ("params", "headers", "naming"),
    [
        ({}, {}, "Prefer"),
        ({"_outputFormat": "text/csv"}, ASYNC, "_outputFormat"),
        ({"_type": "NotAType"}, ASYNC, "_type"),
        ({"_since": "yesterday"}, ASYNC, "_since"),
        ({"_typeFilter": "ImagingStudy"}, ASYNC, "_typeFilter"),
        ({"_type": "Patient", "_typeFilter": "ImagingStudy?modality=CT"}, ASYNC, "_typeFilter"),
        ({"includeAssociatedData": "LatestProvenanceResources"}, ASYNC, "includeAssociatedData"),
    ],
)
def test_bad_kick_offs_are_400_naming_the_parameter(
    server: TestClient, params: dict[str, str], headers: dict[str, str], naming: str
) -> None:
    answer = server.get("/$export", params=params, headers=headers)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome" and naming in str(outcome["issue"][0].get("expression"))


def test_a_bad_type_filter_search_fails_the_kick_off_or_the_job(server: TestClient) -> None:
    seed(server)
    status = kick_off(server, _typeFilter="ImagingStudy?no-such-parameter=1")
    answer = server.get(status)
    deadline = time.monotonic() + 20
    while answer.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = server.get(status)
    assert answer.status_code == 500 and "no-such-parameter" in answer.text


def test_lenient_handling_ignores_unknown_parameters_with_a_warning(server: TestClient) -> None:
    seed(server)
    answer = server.get("/$export", params={"organizeOutputBy": "Patient"},
                        headers={**ASYNC, "Prefer": "respond-async, handling=lenient"})  # fmt: skip
    assert answer.status_code == 202, answer.text
    manifest = finished(server, answer.headers["content-location"].removeprefix(BASE))
    (error,) = manifest["error"]
    outcome = orjson.loads(server.get(error["url"].removeprefix(BASE)).content)
    assert outcome["issue"][0]["severity"] == "warning" and "organizeOutputBy" in outcome["issue"][0]["diagnostics"]


# --- status, cancellation, files ------------------------------------------------------------------------------------


def test_cancel_removes_the_job_and_its_files(server: TestClient) -> None:
    seed(server)
    status = kick_off(server)
    manifest = finished(server, status)
    url = manifest["output"][0]["url"].removeprefix(BASE)
    cancelled = server.delete(status)
    assert cancelled.status_code == 202 and cancelled.json()["resourceType"] == "OperationOutcome"
    assert server.get(status).status_code == 404
    assert server.get(url).status_code == 404
    runner: ExportRunner = server.app.state.export_runner  # type: ignore[attr-defined]
    runner.sweep()
    assert not runner.folder(status.rsplit("/", 1)[1]).exists()
    assert server.delete(status).status_code == 404


def test_files_are_only_those_the_manifest_lists(server: TestClient) -> None:
    seed(server)
    status = kick_off(server)
    finished(server, status)
    job = status.rsplit("/", 1)[1]
    for name in ("..%2F..%2Fetc%2Fpasswd", "Patient-9.ndjson", "other.txt"):
        assert server.get(f"/$export-file/{job}/{name}").status_code == 404
    assert server.get("/$export-status/not-a-job").status_code == 404


def test_two_exports_at_once(server: TestClient) -> None:
    seed(server)
    first, second = kick_off(server, _type="Patient"), kick_off(server, _type="ImagingStudy")
    assert ids(exported(server, finished(server, second))) == {"ImagingStudy": {"s0", "s1", "s2", "s3"}}
    assert ids(exported(server, finished(server, first))) == {"Patient": {"p1", "p2", "p3"}}


def test_files_are_split_at_the_size_limit(settings: Settings, tmp_path: Path) -> None:
    small = replace(settings, export_dir=str(tmp_path / "exports"), export_file_size=600)
    with TestClient(create_app(small), base_url=BASE) as client:
        seed(client)
        manifest = finished(client, kick_off(client, _type="ImagingStudy"))
        assert len(manifest["output"]) > 1 and sum(output["count"] for output in manifest["output"]) == 4
        assert ids(exported(client, manifest)) == {"ImagingStudy": {"s0", "s1", "s2", "s3"}}


# --- a consistent snapshot ------------------------------------------------------------------------------------------


def test_the_export_is_the_database_as_it_was_at_kick_off(server: TestClient) -> None:
    seed(server)
    for number in range(40):
        put(server, study(f"bulk{number}", f"p{number % 3 + 1}", "CT"))
    before = {entry["resource"]["id"]: entry["resource"]
              for entry in server.get("/ImagingStudy", params={"_count": "1000"}).json()["entry"]}  # fmt: skip
    status = kick_off(server, _type="ImagingStudy")
    for number in range(0, 40, 2):  # writes right after the kick-off: updates, deletes, creates
        put(server, dict(study(f"bulk{number}", "p1", "MR"), status="cancelled"))
        server.delete(f"/ImagingStudy/bulk{number + 1}")
        put(server, study(f"late{number}", "p2"))
    found = exported(server, finished(server, status))["ImagingStudy"]
    assert found == before


def test_a_job_whose_runner_died_is_finished_by_another(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(replace(settings, export_dir=str(tmp_path / "a"))), base_url=BASE) as client:
        seed(client)
        service = client.app.state.service  # type: ignore[attr-defined]
        client.app.state.export_runner.stop()  # type: ignore[attr-defined]  # this process runs nothing now
        store: SqlStore = service.store
        request = ExportRequest(level="system", types=("Patient",))
        owner = {"name": "anonymous", "client_id": None, "anonymous": True}
        job = store.transact(lambda tx: jobs.create_job(tx, "job-1", request, owner, BASE, f"{BASE}/$export"))
        assert store.transact(lambda tx: jobs.claim(tx, job.id, "dead-runner", 0.2)) is not None  # then it dies
        other = ExportRunner(service, tmp_path / "b", 60, 1 << 20, False)
        other.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                current = store.reading(lambda reader: jobs.get_job(reader, job.id))
                if current is not None and current.state == "completed":
                    break
                time.sleep(0.1)
            assert current is not None and current.state == "completed" and current.lease_owner == other.worker
            assert current.manifest is not None and current.manifest["output"][0]["count"] == 3
            assert not store.transact(lambda tx: jobs.renew(tx, job.id, "dead-runner", 30, "x"))  # it lost the job
        finally:
            other.stop()


def test_the_capability_statement_declares_bulk_export(server: TestClient) -> None:
    statement = server.get("/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    assert statement["rest"][0]["operation"][0]["name"] == "export"
    by_type = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    assert any(op["definition"].endswith("group-export") for op in by_type["Group"]["operation"])
