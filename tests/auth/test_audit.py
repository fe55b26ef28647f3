"""``--audit-log``: one valid R4 AuditEvent per FHIR interaction, allowed or refused, appended to an NDJSON file
within a second, holding no request or response body, and loadable back into a server."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.audit import ACTIONS, audit_event
from fhir_imaging.audit_log import AuditLog
from fhir_imaging.cli import main
from fhir_imaging.config import Settings
from fhir_imaging.validation import Validator
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BASE, SEED_PATIENT

SECRET = "Qwertzuiop-Marker-7731"  # a distinctive string in a body: it must never reach the audit log


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def _errors(validator: Validator, event: dict[str, Any]) -> list[Any]:
    return [issue for issue in validator.locate(event) if issue.severity in ("error", "fatal")]


def _lines(path: Path, expected: int, within: float = 1.5) -> list[dict[str, Any]]:
    """The events in ``path`` once it holds ``expected`` lines, read without closing the app (at most ``within`` s)."""
    deadline = time.monotonic() + within
    while True:
        data = path.read_bytes() if path.exists() else b""
        lines = data.splitlines()
        if len(lines) >= expected or time.monotonic() > deadline:
            assert data.endswith(b"\n") or not data, "a line is left unfinished"
            return [orjson.loads(line) for line in lines]
        time.sleep(0.05)


def _subtype(event: dict[str, Any]) -> str:
    code: str = event["subtype"][0]["code"]
    return code


def _references(event: dict[str, Any]) -> list[str]:
    return [entity["what"]["reference"] for entity in event.get("entity", []) if "reference" in entity.get("what", {})]


def _query(event: dict[str, Any]) -> str | None:
    found = [entity["query"] for entity in event.get("entity", []) if "query" in entity]
    return base64.b64decode(found[0]).decode() if found else None


def _request_id(event: dict[str, Any]) -> str | None:
    found = [
        entity["what"]["identifier"]["value"]
        for entity in event.get("entity", [])
        if entity["type"]["code"] == "XrequestId"
    ]
    return found[0] if found else None


def test_every_interaction_code_builds_a_valid_audit_event(validator: Validator) -> None:
    for code in [*ACTIONS, "no-such-code"]:
        for status in (200, 201, 304, 401, 403, 404, 500, None):
            event = audit_event(
                code,
                status,
                "client-1",
                client_id="client-1",
                address="10.0.0.7",
                patient="p1",
                references=["ImagingStudy/s1/_history/2", "Patient/p1"],
                query="ImagingStudy?modality=CT&patient=Patient/p1",
                request_id="1a2b3c4d-2f",
            )
            assert _errors(validator, event) == [], (code, status)
            assert event["outcome"] == (
                "0" if status is not None and status < 400 else "4" if status and status < 500 else "8"
            )
    search = audit_event("search-type", 200, "anonymous", query="Patient?family=x")
    assert search["type"]["code"] == "110112" and search["action"] == "E"
    assert audit_event("read", 200, "anonymous")["type"]["code"] == "110110"
    # the patient in context is not repeated when the event is about that patient already
    read = audit_event("read", 200, "u", patient="p1", references=["Patient/p1/_history/1"])
    assert _references(read) == ["Patient/p1/_history/1"]


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    path = tmp_path / "audit.ndjson"
    settings = Settings(database=f"sqlite:///{tmp_path / 'audited.db'}", audit_log=str(path))
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield client, path


def test_one_event_per_interaction_flushed_within_a_second_without_bodies(
    audited: tuple[TestClient, Path], validator: Validator
) -> None:
    client, path = audited
    patient = dict(SEED_PATIENT, name=[{"family": SECRET, "given": ["Peter"]}])
    created = client.post("/Patient", json=patient)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    answers = [
        created,
        client.get(f"/Patient/{pid}"),
        client.get("/Patient", params={"gender": "male"}),
        client.put(f"/Patient/{pid}", json=dict(patient, id=pid, gender="other")),
        client.delete(f"/Patient/{pid}"),
        client.get("/Patient/never-was"),
    ]
    assert [answer.status_code for answer in answers] == [201, 200, 200, 200, 200, 404]

    events = _lines(path, 6)
    assert len(events) == 6
    assert SECRET.encode() not in path.read_bytes()
    for event in events:
        assert _errors(validator, event) == [], event
        assert event["agent"] == [
            {
                "who": {"identifier": {"value": "anonymous"}},
                "requestor": True,
                "network": {"address": "testclient", "type": "2"},
            }
        ]
        assert event["source"]["observer"] == {"display": "fhir-imaging"}
    assert [_subtype(event) for event in events] == ["create", "read", "search-type", "update", "delete", "read"]
    assert [event["action"] for event in events] == ["C", "R", "E", "U", "D", "R"]
    assert [event["outcome"] for event in events] == ["0", "0", "0", "0", "0", "4"]
    assert [event["outcomeDesc"] for event in events] == ["201", "200", "200", "200", "200", "404"]
    assert [event["type"]["code"] for event in events] == ["110110", "110110", "110112", "110110", "110110", "110110"]
    assert _references(events[0]) == [f"Patient/{pid}/_history/1"]  # the version the create wrote
    assert _references(events[1]) == [f"Patient/{pid}/_history/1"]
    assert _references(events[3]) == [f"Patient/{pid}/_history/2"]
    assert _references(events[4]) == [f"Patient/{pid}"]
    assert _references(events[5]) == ["Patient/never-was"]
    assert _query(events[2]) == "Patient?gender=male"
    assert _references(events[2]) == [f"Patient/{pid}"]  # what the search returned


def test_searches_and_histories_record_what_they_returned(audited: tuple[TestClient, Path]) -> None:
    client, path = audited
    patient = client.post("/Patient", json=SEED_PATIENT).json()["id"]
    study = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": f"Patient/{patient}"}}
    first = client.post("/ImagingStudy", json=study).json()["id"]
    second = client.post("/ImagingStudy", json=study).json()["id"]
    client.put(f"/ImagingStudy/{first}", json=dict(study, id=first, status="cancelled"))
    answers = [
        client.get("/ImagingStudy", params={"_include": "ImagingStudy:subject", "_sort": "_id"}),
        client.get(f"/ImagingStudy/{first}/_history"),
        client.get("/ImagingStudy", params={"status": "registered"}),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    search, history, empty = _lines(path, 7)[4:]
    matches = sorted([f"ImagingStudy/{first}", f"ImagingStudy/{second}"])
    assert _references(search) == [*matches, f"Patient/{patient}"]  # the matches, then what _include added
    versions = [f"ImagingStudy/{first}/_history/2", f"ImagingStudy/{first}/_history/1"]
    assert _references(history) == [f"ImagingStudy/{first}", *versions]  # the resource asked for, its versions
    assert _references(empty) == [] and _query(empty) == "ImagingStudy?status=registered"


def test_the_request_id_is_the_one_the_answer_and_the_request_log_carry(audited: tuple[TestClient, Path]) -> None:
    client, path = audited
    answer = client.get("/Patient/p1")
    (event,) = _lines(path, 1)
    assert _request_id(event) == answer.headers["x-request-id"]


def test_searches_bundles_and_refusals_of_the_request_itself(audited: tuple[TestClient, Path]) -> None:
    client, path = audited
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient"}}]}
    transaction = dict(batch, type="transaction")
    answers = [
        client.post("/", json=batch),
        client.post("/", json=transaction),
        client.get("/Patient/p1/ImagingStudy", params={"status": "available"}),
        client.get("/", params={"_type": "Patient"}),
        client.get("/Patient", params={"no-such-parameter": "1"}, headers={"Prefer": "handling=strict"}),
        client.post("/Patient", content=b"{}", headers={"Content-Type": "text/plain"}),
        client.get("/metadata"),  # public: no caller and no patient data, not audited
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 400, 415, 200]
    events = _lines(path, 6)
    assert [_subtype(event) for event in events] == [
        "batch", "transaction", "search-type", "search-system", "search-type", "create",
    ]  # fmt: skip
    assert [event["outcome"] for event in events] == ["0", "0", "0", "0", "4", "4"]
    assert _query(events[2]) == "Patient/p1/ImagingStudy?status=available"
    assert _references(events[2]) == ["Patient/p1"]
    assert _query(events[3]) == "?_type=Patient"
    assert [event["outcomeDesc"] for event in events[4:]] == ["400", "415"]


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


def test_refusals_name_the_caller_when_it_is_known(issuer: Issuer, tmp_path: Path, validator: Validator) -> None:
    path = tmp_path / "audit.ndjson"
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'auth.db'}", auth_issuer=issuer.url, auth_audience=BASE, audit_log=str(path)
    )
    with TestClient(create_app(settings), base_url=BASE) as client:
        assert client.get("/ImagingStudy/s1").status_code == 401
        assert client.get("/ImagingStudy/s1", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
        token = issuer.token("system/Patient.rs", client_id="viewer-7", sub="dr-who")
        assert client.get("/ImagingStudy/s1", headers={"Authorization": f"Bearer {token}"}).status_code == 403
        events = _lines(path, 3)
    assert [(event["outcome"], event["outcomeDesc"]) for event in events] == [("4", "401"), ("4", "401"), ("4", "403")]
    assert [event["agent"][0]["who"]["identifier"]["value"] for event in events] == ["unknown", "unknown", "dr-who"]
    assert events[2]["agent"][0]["altId"] == "viewer-7"
    assert "altId" not in events[0]["agent"][0]
    assert all(_references(event) == ["ImagingStudy/s1"] for event in events)
    assert all(_errors(validator, event) == [] for event in events)
    assert token.encode() not in path.read_bytes()


def test_an_audit_file_loads_back_into_a_fresh_server(audited: tuple[TestClient, Path], tmp_path: Path) -> None:
    client, path = audited
    assert client.post("/Patient", json=SEED_PATIENT).status_code == 201
    assert client.get("/Patient").status_code == 200
    assert client.get("/Patient/missing").status_code == 404
    events = _lines(path, 3)
    assert len(events) == 3
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["load", str(path), "--database", database]) == 0
    with TestClient(create_app(Settings(database=database)), base_url=BASE) as fresh:
        loaded = fresh.get("/AuditEvent", params={"_count": 100}).json()
    assert sorted(entry["resource"]["id"] for entry in loaded["entry"]) == sorted(event["id"] for event in events)


def test_without_the_setting_nothing_is_recorded(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(database=f"sqlite:///{tmp_path / 'plain.db'}")), base_url=BASE) as client:
        assert client.app.state.audit is None  # type: ignore[attr-defined]
        assert client.post("/Patient", json=SEED_PATIENT).status_code == 201
    assert list(tmp_path.glob("*.ndjson")) == []


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "small.ndjson"
    log = AuditLog(path, capacity=2, interval=60)  # the writer does not wake before close
    started = time.monotonic()
    for number in range(5):
        log.record(audit_event("read", 200, f"caller-{number}"))
    assert time.monotonic() - started < 0.5
    assert log.dropped == 3
    assert any("audit queue is full" in record.getMessage() for record in caplog.records)
    log.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["agent"][0]["who"]["identifier"]["value"] for line in lines] == ["caller-0", "caller-1"]
    assert path.stat().st_mode & 0o777 == 0o600
    log.record(audit_event("read", 200, "late"))  # after close: dropped, not raised
    assert log.dropped == 4
