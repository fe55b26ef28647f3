"""Granular SMART scopes (``user/ImagingStudy.rs?modality=CT``) over HTTP, on SQLite and PostgreSQL: searches are
narrowed to what the grants' queries match (checked against an in-Python reference filter over generated studies,
across pages), reads of other resources are 404, includes, chains and ``_has`` see only what the grants allow,
writes must match (403, nothing stored), and a query that does not parse grants nothing."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from tests.auth.issuer import Issuer, running_issuer
from tests.conftest import BACKENDS, BASE, fresh_postgres_database

DCM = "http://dicom.nema.org/resources/ontology/DCM"
MODALITIES = ("CT", "MR", "US", "DX")
STATUSES = ("available", "registered", "cancelled")
PATIENTS = {"p1": "female", "p2": "male", "p3": "female", "p4": "other"}
JSON = {"Content-Type": "application/fhir+json"}


def _studies(count: int) -> list[dict[str, Any]]:
    """Studies with random modalities (study level, series level, both or none), statuses and subjects."""
    rng = random.Random(20261)
    studies = []
    for number in range(count):
        study: dict[str, Any] = {
            "resourceType": "ImagingStudy",
            "id": f"s{number}",
            "status": rng.choice(STATUSES),
            "subject": {"reference": f"Patient/{rng.choice(sorted(PATIENTS))}"},
        }
        if rng.random() < 0.7:
            study["modality"] = [{"system": DCM, "code": code} for code in rng.sample(MODALITIES, rng.randint(1, 2))]
        if rng.random() < 0.4:
            study["series"] = [{"uid": f"1.2.{number}", "modality": {"system": DCM, "code": rng.choice(MODALITIES)}}]
        studies.append(study)
    return studies


STUDIES = _studies(40)


def _modalities(study: dict[str, Any]) -> set[str]:
    found = {coding["code"] for coding in study.get("modality", [])}
    return found | {series["modality"]["code"] for series in study.get("series", [])}


def _matches(study: dict[str, Any], query: str) -> bool:
    """The reference filter: a study against the few criteria these tests use, read from its JSON as written."""
    for name, value in parse_qsl(query):
        values = set(value.split(","))
        if name == "modality" and not values & _modalities(study):
            return False
        if name == "status" and study["status"] not in values:
            return False
        if name == "subject" and study["subject"]["reference"] not in values:
            return False
    return True


def _allowed(study: dict[str, Any], grants: list[str]) -> bool:
    return any(_matches(study, query) for query in grants)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    def serve(database: str) -> Iterator[TestClient]:
        settings = Settings(database=database, auth_issuer=issuer.url, auth_audience=BASE, pool_size=4)
        with TestClient(create_app(settings), base_url=BASE) as client:
            admin = _as(issuer, "system/*.cruds")
            for patient_id, gender in PATIENTS.items():
                patient = {"resourceType": "Patient", "id": patient_id, "gender": gender, "name": [{"family": "Lee"}]}
                assert client.put(f"/Patient/{patient_id}", json=patient, headers=admin).status_code == 201
            for study in STUDIES:
                assert client.put(f"/ImagingStudy/{study['id']}", json=study, headers=admin).status_code == 201
            yield client

    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("granular") / "granular.db"
        yield from serve(f"sqlite:///{path}")
    else:
        with fresh_postgres_database() as url:
            yield from serve(url)


def _as(issuer: Issuer, scope: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(scope, **claims)}", **JSON}


def _all_pages(server: TestClient, path: str, headers: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Every matching resource's Type/id, following the next links, and each page's Bundle."""
    found: list[str] = []
    bundles = []
    url: str | None = path
    while url is not None:
        response = server.get(url.removeprefix(BASE), headers=headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        bundles.append(bundle)
        found += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        assert len(bundles) < 100
    return found, bundles


def _expected(grants: list[str], query: str = "") -> list[str]:
    return sorted(f"ImagingStudy/{s['id']}" for s in STUDIES if _allowed(s, grants) and _matches(s, query))


# -- searches --------------------------------------------------------------------------------------------------------


def test_a_search_is_narrowed_to_what_the_grant_matches(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "user/ImagingStudy.rs?modality=CT")
    found, _ = _all_pages(server, "/ImagingStudy?_count=1000", headers)
    assert sorted(found) == _expected(["modality=CT"]) and found
    narrowed, _ = _all_pages(server, "/ImagingStudy?status=available", headers)
    assert sorted(narrowed) == _expected(["modality=CT"], "status=available")
    unrestricted, _ = _all_pages(server, "/ImagingStudy?_count=1000", _as(issuer, "user/ImagingStudy.rs"))
    assert len(unrestricted) == len(STUDIES) > len(found)


def test_two_grants_combine_with_or_and_pages_stay_whole(server: TestClient, issuer: Issuer) -> None:
    grants = ["modality=CT", "modality=MR&status=available"]
    headers = _as(issuer, " ".join(f"user/ImagingStudy.rs?{query}" for query in grants))
    found, bundles = _all_pages(server, "/ImagingStudy?_count=2&_total=accurate", headers)
    expected = _expected(grants)
    assert len(found) == len(set(found))  # no duplicates across pages
    assert sorted(found) == expected and len(bundles) >= len(expected) // 2
    assert {bundle["total"] for bundle in bundles} == {len(expected)}
    assert all(len(bundle.get("entry", [])) <= 2 for bundle in bundles)
    summary = server.get("/ImagingStudy?_summary=count", headers=headers).json()
    assert summary["total"] == len(expected)


GRANTS = st.lists(
    st.sampled_from(
        [
            "modality=CT",
            "modality=MR",
            "modality=CT,US",
            "status=available",
            "modality=MR&status=registered",
            "subject=Patient/p2",
            "modality=DX&subject=Patient/p1,Patient/p3",
        ]
    ),
    min_size=1,
    max_size=3,
)
ASKED = st.sampled_from(["", "status=available", "modality=US", "subject=Patient/p1", "status=cancelled,registered"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grants=GRANTS, asked=ASKED, count=st.sampled_from([2, 3, 50]))
def test_random_grants_narrow_searches_exactly(
    server: TestClient, issuer: Issuer, grants: list[str], asked: str, count: int
) -> None:
    headers = _as(issuer, " ".join(f"user/ImagingStudy.rs?{query}" for query in grants))
    found, _ = _all_pages(server, f"/ImagingStudy?{asked}&_count={count}", headers)
    assert len(found) == len(set(found))
    assert sorted(found) == _expected(grants, asked), (grants, asked)


def test_system_and_compartment_searches_are_narrowed(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "user/ImagingStudy.rs?modality=CT user/Patient.rs?gender=female")
    found, _ = _all_pages(server, "/?_type=ImagingStudy,Patient&_count=7", headers)
    females = sorted(f"Patient/{p}" for p, gender in PATIENTS.items() if gender == "female")
    assert sorted(found) == sorted(_expected(["modality=CT"]) + females)
    mine, _ = _all_pages(server, "/Patient/p1/ImagingStudy", headers)
    assert sorted(mine) == _expected(["modality=CT"], "subject=Patient/p1")
    posted = server.post(
        "/ImagingStudy/_search",
        content="status=available",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    ids = sorted(f"ImagingStudy/{e['resource']['id']}" for e in posted.json().get("entry", []))
    assert ids == _expected(["modality=CT"], "status=available")


def test_patient_context_still_applies_to_granular_patient_grants(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "patient/ImagingStudy.rs?modality=CT", patient="p1")
    found, _ = _all_pages(server, "/ImagingStudy", headers)
    assert sorted(found) == _expected(["modality=CT"], "subject=Patient/p1")


def test_includes_leave_out_what_the_read_grants_do_not_match(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "user/ImagingStudy.rs user/Patient.rs?gender=female")
    found, _ = _all_pages(server, "/ImagingStudy?_include=ImagingStudy:subject&_count=10", headers)
    patients = {item for item in found if item.startswith("Patient/")}
    assert patients == {f"Patient/{p}" for p, gender in PATIENTS.items() if gender == "female"}
    headers = _as(issuer, "user/Patient.rs user/ImagingStudy.rs?modality=MR")
    found, _ = _all_pages(server, "/Patient?_revinclude=ImagingStudy:subject", headers)
    assert sorted(item for item in found if item.startswith("ImagingStudy/")) == _expected(["modality=MR"])


def test_chains_and_has_see_only_what_the_search_grants_match(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "user/ImagingStudy.rs user/Patient.s?gender=female")
    found, _ = _all_pages(server, "/ImagingStudy?subject:Patient.name=Lee&_count=1000", headers)
    females = [f"Patient/{p}" for p, gender in PATIENTS.items() if gender == "female"]
    assert sorted(found) == _expected(["subject=" + ",".join(females)])
    headers = _as(issuer, "user/Patient.rs user/ImagingStudy.s?modality=CT")
    found, _ = _all_pages(server, "/Patient?_has:ImagingStudy:subject:status=available", headers)
    owners = {s["subject"]["reference"] for s in STUDIES if _matches(s, "modality=CT&status=available")}
    assert sorted(found) == sorted(owners)


# -- reads -----------------------------------------------------------------------------------------------------------


def test_reads_of_resources_the_grant_does_not_match_are_404(server: TestClient, issuer: Issuer) -> None:
    headers = _as(issuer, "user/ImagingStudy.rs?modality=CT")
    inside = next(s["id"] for s in STUDIES if _matches(s, "modality=CT"))
    outside = next(s["id"] for s in STUDIES if not _matches(s, "modality=CT"))
    assert server.get(f"/ImagingStudy/{inside}", headers=headers).status_code == 200
    for path in (f"/ImagingStudy/{outside}", f"/ImagingStudy/{outside}/_history/1", f"/ImagingStudy/{outside}/_history",
                 "/ImagingStudy/nothing"):  # fmt: skip
        response = server.get(path, headers=headers)
        assert response.status_code == 404, (path, response.text)
    assert server.get(f"/ImagingStudy/{inside}/_history/1", headers=headers).status_code == 200
    assert server.get(f"/ImagingStudy/{inside}/_history", headers=headers).status_code == 200
    assert server.get("/ImagingStudy/_history", headers=headers).status_code == 403
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"ImagingStudy/{outside}"}},
        {"request": {"method": "GET", "url": f"ImagingStudy/{inside}"}},
        {"request": {"method": "GET", "url": "ImagingStudy?_count=1000"}}]}  # fmt: skip
    answered = server.post("/", json=batch, headers=headers).json()["entry"]
    assert answered[0]["response"]["status"].startswith("404")
    assert answered[1]["response"]["status"].startswith("200")
    listed = sorted(f"ImagingStudy/{e['resource']['id']}" for e in answered[2]["resource"].get("entry", []))
    assert listed == _expected(["modality=CT"])


def test_a_query_that_does_not_parse_grants_nothing(server: TestClient, issuer: Issuer) -> None:
    malformed = ("nonsense=1", "started=notadate", "_count=5", "modality=")
    for scope in (*(f"user/ImagingStudy.rs?{query}" for query in malformed), "user/*.rs?modality=CT"):
        headers = _as(issuer, scope)
        for path in ("/ImagingStudy", "/ImagingStudy/s0", "/?_type=ImagingStudy"):
            response = server.get(path, headers=headers)
            allowed = scope.startswith("user/*") and "ImagingStudy" in path  # ImagingStudy reads it; nothing else
            assert response.status_code == (200 if allowed else 403) or (allowed and response.status_code == 404)
        if scope.startswith("user/*"):
            assert server.get("/Patient", headers=headers).status_code == 403  # Patient has no modality
    headers = _as(issuer, "user/ImagingStudy.rs?nonsense=1 user/ImagingStudy.rs?modality=MR")
    found, _ = _all_pages(server, "/ImagingStudy?_count=1000", headers)
    assert sorted(found) == _expected(["modality=MR"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(st.sampled_from("=&,|:._$%+?/*()<>- abcmodalityCT01_"), max_size=40))
def test_no_grant_query_makes_a_server_error(server: TestClient, issuer: Issuer, query: str) -> None:
    headers = _as(issuer, f"user/ImagingStudy.rs?{query.replace(' ', '')}")
    for path in ("/ImagingStudy?_count=3", "/ImagingStudy/s0", "/ImagingStudy/s0/_history"):
        assert server.get(path, headers=headers).status_code in (200, 403, 404), (query, path)


# -- writes ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def writable(issuer: Issuer, database: str) -> Iterator[TestClient]:
    """A server of its own (the searches above compare with the studies they loaded)."""
    settings = Settings(database=database, auth_issuer=issuer.url, auth_audience=BASE, pool_size=4)
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield client


def _study(study_id: str, modality: str) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "modality": [{"system": DCM, "code": modality}],
    }


def test_writes_must_match_the_grant(writable: TestClient, issuer: Issuer) -> None:
    server = writable
    headers = _as(issuer, "user/ImagingStudy.cruds?modality=US")
    admin = _as(issuer, "system/*.cruds")
    created = {**_study("x", "MR"), "identifier": [{"system": "urn:w", "value": "created"}]}
    del created["id"]
    refused = server.post("/ImagingStudy", json=created, headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert server.get("/ImagingStudy?identifier=urn:w|created", headers=admin).json()["total"] == 0  # nothing stored
    conditional = server.post("/ImagingStudy", json=created, headers={**headers, "If-None-Exist": "identifier=x"})
    assert conditional.status_code == 403
    accepted = server.post(
        "/ImagingStudy", json={**created, "modality": _study("x", "US")["modality"]}, headers=headers
    )
    assert accepted.status_code == 201, accepted.text

    assert server.put("/ImagingStudy/w1", json=_study("w1", "MR"), headers=headers).status_code == 403
    assert server.get("/ImagingStudy/w1", headers=admin).status_code == 404  # update-as-create refused: nothing
    assert server.put("/ImagingStudy/w1", json=_study("w1", "US"), headers=headers).status_code == 201
    assert server.put("/ImagingStudy/w1", json=_study("w1", "CT"), headers=headers).status_code == 403  # new content
    assert server.put("/ImagingStudy/w2", json=_study("w2", "CT"), headers=admin).status_code == 201
    assert server.put("/ImagingStudy/w2", json=_study("w2", "US"), headers=headers).status_code == 403  # current
    patch = [{"op": "replace", "path": "/modality/0/code", "value": "CT"}]
    patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
    assert server.patch("/ImagingStudy/w1", content=json.dumps(patch), headers=patch_headers).status_code == 403
    back = [{"op": "replace", "path": "/modality/0/code", "value": "US"}]
    assert server.patch("/ImagingStudy/w2", content=json.dumps(back), headers=patch_headers).status_code == 403
    assert server.delete("/ImagingStudy/w2", headers=headers).status_code == 403
    assert server.delete("/ImagingStudy?modality=CT", headers=headers).status_code in (200, 204)  # finds none
    assert server.get("/ImagingStudy/w1", headers=admin).json()["modality"][0]["code"] == "US"
    assert server.get("/ImagingStudy/w2", headers=admin).json()["meta"]["versionId"] == "1"
    assert server.delete("/ImagingStudy/w1", headers=headers).status_code in (200, 204)


def test_a_transaction_with_one_write_the_grant_does_not_match_is_refused_whole(
    writable: TestClient, issuer: Issuer
) -> None:
    server = writable
    headers = _as(issuer, "user/ImagingStudy.cruds?modality=US")
    admin = _as(issuer, "system/*.cruds")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _study("t1", "US"), "request": {"method": "PUT", "url": "ImagingStudy/t1"}},
            {"resource": _study("t2", "MR"), "request": {"method": "PUT", "url": "ImagingStudy/t2"}},
        ],
    }
    refused = server.post("/", json=bundle, headers=headers)
    assert refused.status_code == 403, refused.text
    assert "Bundle.entry[1]" in refused.json()["issue"][0]["expression"]
    assert server.get("/ImagingStudy/t1", headers=admin).status_code == 404  # nothing of it was written
    bundle["entry"][1]["resource"] = _study("t2", "US")
    assert server.post("/", json=bundle, headers=headers).status_code == 200
    deletes = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "ImagingStudy/w2"}},
        {"request": {"method": "DELETE", "url": "ImagingStudy/t2"}}]}  # fmt: skip
    server.put("/ImagingStudy/w2", json=_study("w2", "CT"), headers=admin)
    answered = server.post("/", json=deletes, headers=headers).json()["entry"]
    assert answered[0]["response"]["status"].startswith("403")
    assert answered[1]["response"]["status"].startswith("204")
    assert server.get("/ImagingStudy/w2", headers=admin).status_code == 200


def test_conditional_criteria_are_searches_narrowed_like_any_other(writable: TestClient, issuer: Issuer) -> None:
    server, admin = writable, _as(issuer, "system/*.cruds")
    for patient_id, gender in (("f1", "female"), ("m1", "male")):
        server.put(
            f"/Patient/{patient_id}",
            json={"resourceType": "Patient", "id": patient_id, "gender": gender},
            headers=admin,
        )
    for study_id, patient_id in (("c1", "f1"), ("c2", "m1")):
        study = {**_study(study_id, "US"), "subject": {"reference": f"Patient/{patient_id}"}}
        assert server.put(f"/ImagingStudy/{study_id}", json=study, headers=admin).status_code == 201
    no_patients = _as(issuer, "user/ImagingStudy.ds")
    refused = server.delete("/ImagingStudy?subject:Patient.gender=male", headers=no_patients)
    assert refused.status_code == 403 and "Patient" in refused.text  # a chain needs s on the type it reaches
    females = _as(issuer, "user/ImagingStudy.ds user/Patient.s?gender=female")
    assert server.delete("/ImagingStudy?subject:Patient.gender=male", headers=females).status_code in (200, 204)
    assert server.get("/ImagingStudy/c2", headers=admin).status_code == 200  # the chain saw no male patient
    assert server.delete("/ImagingStudy?subject:Patient.gender=female", headers=females).status_code in (200, 204)
    assert server.get("/ImagingStudy/c1", headers=admin).status_code == 410
    mr_only = _as(issuer, "user/ImagingStudy.cus?modality=MR")
    conditional = {**_study("x", "MR"), "subject": {"reference": "Patient/m1"}}
    del conditional["id"]
    created = server.put("/ImagingStudy?subject=Patient/m1", json=conditional, headers=mr_only)
    assert created.status_code == 201, created.text  # c2 (US) is not found by the narrowed criteria: a new study
    assert server.get("/ImagingStudy/c2", headers=admin).json()["modality"][0]["code"] == "US"
