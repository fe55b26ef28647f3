"""search: one test per seed example of the search issue (https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.conftest import BASE, SEED_PATIENT, SEED_STUDY

DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _study(study_id: str, **changes: Any) -> dict[str, Any]:
    study = copy.deepcopy(SEED_STUDY)
    study["id"] = study_id
    study.update(changes)
    return study


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


def ids(client: TestClient, url: str, **headers: str) -> list[str]:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return [entry["resource"]["id"] for entry in bundle.get("entry", []) if entry["search"]["mode"] == "match"]


@pytest.fixture
def imaging(client: TestClient) -> TestClient:
    """Three studies of two patients, with the references and codes the seed examples search for."""
    _put(client, dict(copy.deepcopy(SEED_PATIENT), id="123"))
    _put(client, {"resourceType": "Patient", "id": "999", "name": [{"family": "Other"}]})
    _put(client, {"resourceType": "Encounter", "id": "456", "status": "finished", "class": {"code": "AMB"}})
    _put(
        client,
        _study(
            "img-001",
            subject={"reference": "Patient/123"},
            encounter={"reference": "Encounter/456"},
            referrer={"reference": "Practitioner/789"},
            basedOn=[{"reference": "ServiceRequest/sr-001"}],
            identifier=[
                {
                    "system": "urn:dicom:accession",
                    "value": "ACC123456",
                    "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                },
                {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"},
            ],
            interpreter=[{"reference": "Practitioner/rad-1"}],
            endpoint=[{"reference": "Endpoint/wado"}],
            reasonCode=[{"coding": [{"system": "http://snomed.info/sct", "code": "1234"}], "text": "Chest pain"}],
            series=[
                {
                    "uid": "1.2.3.4.1",
                    "modality": {"system": DCM, "code": "CT"},
                    "bodySite": {"system": "http://snomed.info/sct", "code": "51185008", "display": "Thorax"},
                    "performer": [{"actor": {"reference": "Practitioner/tech-1"}}],
                    "instance": [
                        {
                            "uid": "1.2.3.4.1.1",
                            "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"},
                        }
                    ],
                }
            ],
        ),
    )
    _put(
        client,
        _study(
            "img-002",
            status="registered",
            subject={"reference": "Patient/999"},
            started="2024-01-20T08:00:00+02:00",
            modality=[{"system": DCM, "code": "MR"}],
            series=[{"uid": "2.1", "modality": {"system": DCM, "code": "US"}}],
        ),
    )
    _put(
        client,
        _study(
            "img-003",
            status="cancelled",
            subject={"reference": f"{BASE}/Patient/123"},
            started="2023-12-31T23:30:00-01:00",
            modality=[{"system": "urn:other", "code": "CT"}],
        ),
    )
    return client


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_id=img-001", ["img-001"]),
        ("identifier=ACC123456", ["img-001"]),
        ("identifier=urn:dicom:accession|ACC123456", ["img-001"]),
        ("identifier=urn:other|ACC123456", []),
        ("identifier=|ACC123456", []),
        ("identifier=urn:dicom:accession|", ["img-001"]),
        (f"identifier:of-type={V2_0203}|ACSN|ACC123456", ["img-001"]),
        (f"identifier:of-type={V2_0203}|MR|ACC123456", []),
        ("patient=Patient/123", ["img-001", "img-003"]),
        ("patient=123", ["img-001", "img-003"]),
        (f"patient={BASE}/Patient/123", ["img-001", "img-003"]),
        ("patient=http://elsewhere.org/fhir/Patient/123", []),
        ("subject=Patient/123", ["img-001", "img-003"]),
        ("encounter=Encounter/456", ["img-001"]),
        ("referrer=Practitioner/789", ["img-001"]),
        ("basedon=ServiceRequest/sr-001", ["img-001"]),
        ("status=available", ["img-001"]),
        ("status=registered,cancelled", ["img-002", "img-003"]),
        ("modality=CT", ["img-001", "img-003"]),
        (f"modality={DCM}|CT", ["img-001"]),
        ("modality=MR,US", ["img-002"]),
        ("modality=US", ["img-002"]),
        ("started=ge2024-01-01", ["img-001", "img-002", "img-003"]),  # img-003: 2024-01-01T00:30Z in UTC
        ("started=ge2024-01-01&started=lt2024-02-01", ["img-002", "img-003"]),
        ("started=2024-06-15", ["img-001"]),
        ("started=2024", ["img-001", "img-002", "img-003"]),
        ("started=2023", []),
        ("started=2024-01-01T00:30:00Z", ["img-003"]),
        ("started=lt2024-01-01", []),
        ("started=eb2024-01-20T06:00:00Z", ["img-003"]),
        ("started=sa2024-01-20T06:00:00Z", ["img-001"]),
        ("bodysite=51185008", ["img-001"]),
        ("dicom-class=urn:oid:1.2.840.10008.5.1.4.1.1.2", ["img-001"]),
        ("endpoint=Endpoint/wado", ["img-001"]),
        ("instance=1.2.3.4.1.1", ["img-001"]),
        ("interpreter=Practitioner/rad-1", ["img-001"]),
        ("performer=Practitioner/tech-1", ["img-001"]),
        ("reason=1234", ["img-001"]),
        ("series=2.1", ["img-002"]),
        ("status=available&modality=CT", ["img-001"]),
        ("status:not=available", ["img-002", "img-003"]),
        ("encounter:missing=true", ["img-002", "img-003"]),
        ("encounter:missing=false", ["img-001"]),
        ("reason:text=chest", ["img-001"]),
        ("patient:Patient=123", ["img-001", "img-003"]),
        ("patient.name=chalm", ["img-001", "img-003"]),
        ("subject:Patient.name=other", ["img-002"]),
        ("patient.identifier=urn:oid:1.2.36.146.595.217.0.1|12345", ["img-001", "img-003"]),
        ("identifier=urn:oid:1.2.3.4", ["img-001"]),
        ("description=ct", ["img-001", "img-002", "img-003"]),
        ("description=chest", []),
        ("description:contains=chest", ["img-001", "img-002", "img-003"]),
        ("description:exact=CT Chest with contrast", ["img-001", "img-002", "img-003"]),
        ("description:exact=ct chest with contrast", []),
        ("accession=ACC123456", ["img-001"]),
        ("accession=urn:dicom:accession|ACC123456", ["img-001"]),
        ("accession=urn:oid:1.2.3.4", []),
        ("accession:missing=true", ["img-002", "img-003"]),
    ],
)
def test_seed_search(imaging: TestClient, query: str, expected: list[str]) -> None:
    assert ids(imaging, f"/ImagingStudy?{query}") == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_sort=-started", ["img-001", "img-002", "img-003"]),
        ("_sort=started", ["img-003", "img-002", "img-001"]),
        ("_sort=_id", ["img-001", "img-002", "img-003"]),
        ("_sort=-_id", ["img-003", "img-002", "img-001"]),
        ("_sort=-_lastUpdated", ["img-003", "img-002", "img-001"]),
        ("_sort=status,-started", ["img-001", "img-003", "img-002"]),
        ("_sort=-accession,_id", ["img-001", "img-002", "img-003"]),
        ("_sort=accession,-_id", ["img-001", "img-003", "img-002"]),
    ],
)
def test_sort(imaging: TestClient, query: str, expected: list[str]) -> None:
    assert ids(imaging, f"/ImagingStudy?{query}") == expected


def test_last_updated_tag_profile_security_source(client: TestClient) -> None:
    meta = {
        "tag": [{"system": "urn:tags", "code": "research"}],
        "security": [{"system": "urn:sec", "code": "R"}],
        "profile": ["http://example.org/StructureDefinition/imaging"],
        "source": "urn:source:pacs-1",
    }
    _put(client, _study("tagged", meta=meta))
    _put(client, _study("plain"))
    assert ids(client, "/ImagingStudy?_tag=urn:tags|research") == ["tagged"]
    assert ids(client, "/ImagingStudy?_security=R") == ["tagged"]
    assert ids(client, "/ImagingStudy?_profile=http://example.org/StructureDefinition/imaging") == ["tagged"]
    assert ids(client, "/ImagingStudy?_source=urn:source:pacs-1") == ["tagged"]
    assert ids(client, "/ImagingStudy?_lastUpdated=gt2000-01-01&_sort=_id") == ["plain", "tagged"]
    assert ids(client, "/ImagingStudy?_lastUpdated=lt2000-01-01") == []


def test_every_date_precision_and_prefix(client: TestClient) -> None:
    _put(client, _study("s", started="2024-06-15T10:30:15.250Z"))
    hits = {
        "2024": True,
        "2024-06": True,
        "2024-06-15": True,
        "2024-06-15T10:30Z": True,
        "2024-06-15T10:30:15Z": True,
        "2024-06-15T10:30:15.2Z": True,
        "2024-06-15T10:30:15.3Z": False,
        "2024-06-15T12:30:15+02:00": True,
        "2024-06-15T10:30:15": True,
        "ne2024-06-15": False,
        "ne2024-06-16": True,
        "gt2024-06-14": True,
        "gt2024-06-15": False,
        "lt2024-06-16": True,
        "lt2024-06-15": False,
        "ge2024-06-15": True,
        "le2024-06-15": True,
        "sa2024-06-14": True,
        "eb2024-06-16": True,
        "eb2024-06-15": False,
        "ap2024-06-10": True,
        "ap2020": False,
    }
    for value, hit in hits.items():
        assert ids(client, f"/ImagingStudy?started={value.replace('+', '%2B')}") == (["s"] if hit else []), value


def test_period_targets(client: TestClient) -> None:
    _put(client, {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                  "period": {"start": "2024-01-10", "end": "2024-01-20"}})  # fmt: skip
    _put(client, {"resourceType": "Encounter", "id": "e2", "status": "in-progress", "class": {"code": "AMB"},
                  "period": {"start": "2024-02-01"}})  # fmt: skip
    assert ids(client, "/Encounter?date=2024-01-15") == []  # the period is not inside that day
    assert ids(client, "/Encounter?date=2024-01") == ["e1"]
    assert ids(client, "/Encounter?date=ge2024-01-15") == ["e1", "e2"]  # e1 goes on after that day
    assert ids(client, "/Encounter?date=ge2024-01-21") == ["e2"]
    assert ids(client, "/Encounter?date=gt2025-01-01") == ["e2"]  # an open end goes on for ever
    assert ids(client, "/Encounter?date=lt2024-01-15") == ["e1"]


def test_patient_search_and_strings(client: TestClient) -> None:
    _put(client, {"resourceType": "Patient", "id": "a", "name": [{"family": "Müller", "given": ["Anna"]}],
                  "birthDate": "1980-05-01", "gender": "female"})  # fmt: skip
    _put(client, {"resourceType": "Patient", "id": "b", "name": [{"family": "Mullins"}], "gender": "male"})
    assert ids(client, "/Patient?name=mul") == ["a", "b"]
    assert ids(client, "/Patient?family:exact=Müller") == ["a"]
    assert ids(client, "/Patient?family:exact=muller") == []
    assert ids(client, "/Patient?name:contains=llin") == ["b"]
    assert ids(client, "/Patient?birthdate=1980") == ["a"]
    assert ids(client, "/Patient?gender=female") == ["a"]
    assert ids(client, "/Patient?birthdate:missing=true") == ["b"]


def test_compartment_search_equals_patient_search(imaging: TestClient) -> None:
    assert ids(imaging, "/Patient/123/ImagingStudy") == ids(imaging, "/ImagingStudy?patient=Patient/123")
    assert ids(imaging, "/Patient/123/ImagingStudy?modality=CT&status=cancelled") == ["img-003"]
    assert ids(imaging, "/Patient/nobody/ImagingStudy") == []
    bundle = imaging.get("/Patient/123/ImagingStudy").json()
    assert bundle["link"][0]["url"] == f"{BASE}/Patient/123/ImagingStudy"
    assert imaging.get("/Patient/123/Organization").status_code == 404


def test_reverse_chaining(imaging: TestClient) -> None:
    assert ids(imaging, "/Patient?_has:ImagingStudy:patient:modality=CT") == ["123"]
    assert ids(imaging, "/Patient?_has:ImagingStudy:patient:modality=US") == ["999"]
    assert ids(imaging, "/Patient?_has:ImagingStudy:patient:status=entered-in-error") == []


def test_include_and_revinclude(imaging: TestClient) -> None:
    bundle = imaging.get(
        "/ImagingStudy?_id=img-001&_include=ImagingStudy:patient&_include=ImagingStudy:encounter"
    ).json()
    modes = {
        (entry["resource"]["resourceType"], entry["resource"]["id"]): entry["search"]["mode"]
        for entry in bundle["entry"]
    }
    assert modes == {
        ("ImagingStudy", "img-001"): "match",
        ("Patient", "123"): "include",
        ("Encounter", "456"): "include",
    }
    bundle = imaging.get("/Patient?_id=123&_revinclude=ImagingStudy:patient").json()
    included = sorted(entry["resource"]["id"] for entry in bundle["entry"] if entry["search"]["mode"] == "include")
    assert included == ["img-001", "img-003"]
    bundle = imaging.get(
        "/Encounter?_id=456&_revinclude=ImagingStudy:encounter&_include:iterate=ImagingStudy:patient"
    ).json()
    assert {entry["resource"]["id"] for entry in bundle["entry"]} == {"456", "img-001", "123"}
    bundle = imaging.get("/ImagingStudy?_id=img-002&_include=*").json()
    assert {entry["resource"]["id"] for entry in bundle["entry"]} == {"img-002", "999"}


def test_summary_elements_and_total(imaging: TestClient) -> None:
    count = imaging.get("/ImagingStudy?_summary=count").json()
    assert count["total"] == 3 and "entry" not in count
    summary = imaging.get("/ImagingStudy?_id=img-001&_summary=true").json()["entry"][0]["resource"]
    assert "series" in summary and "instance" not in summary["series"][0]
    assert {"code": "SUBSETTED", "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"} in summary[
        "meta"
    ]["tag"]
    elements = imaging.get("/ImagingStudy?_id=img-001&_elements=started").json()["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "started", "status", "subject"}
    data = imaging.get("/ImagingStudy?_id=img-001&_summary=data").json()["entry"][0]["resource"]
    assert "series" in data and "text" not in data
    assert imaging.get("/ImagingStudy?_total=accurate&_count=1").json()["total"] == 3
    assert "total" not in imaging.get("/ImagingStudy?_total=none").json()
    assert imaging.get("/ImagingStudy?_count=0&_total=accurate").json()["total"] == 3


def test_count_zero_answers_like_summary_count(imaging: TestClient) -> None:
    """search.html#count: ``_count=0`` is ``_summary=count``: the total, no entries (fhirpy's ``count()``)."""
    bundle = imaging.get("/ImagingStudy?_count=0").json()
    assert bundle["type"] == "searchset" and bundle["total"] == 3 and "entry" not in bundle
    assert imaging.get("/ImagingStudy?modality=CT&_count=0").json()["total"] == 2
    assert imaging.get("/ImagingStudy?_count=0&_include=ImagingStudy:patient").json()["total"] == 3


def test_post_search_merges_body_and_query(imaging: TestClient) -> None:
    response = imaging.post("/ImagingStudy/_search?status=available,cancelled", data={"modality": "CT"})
    assert response.status_code == 200
    assert [entry["resource"]["id"] for entry in response.json()["entry"]] == ["img-001", "img-003"]


def test_system_search(imaging: TestClient) -> None:
    assert sorted(ids(imaging, "/?_type=Patient,ImagingStudy&_id=123,img-002")) == ["123", "img-002"]
    assert ids(imaging, "/?_id=456") == ["456"]
    assert imaging.get("/?_type=Nope").status_code == 400


def test_system_search_links_keep_its_types(imaging: TestClient) -> None:
    bundle = imaging.get("/?_type=Patient,Encounter&_count=1").json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"] == f"{BASE}?_type=Patient%2CEncounter&_count=1"
    found = [bundle["entry"][0]["resource"]["resourceType"]]
    while "next" in links:
        bundle = imaging.get(links["next"].removeprefix(BASE)).json()
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        found += [entry["resource"]["resourceType"] for entry in bundle.get("entry", [])]
    assert sorted(found) == ["Encounter", "Patient", "Patient"]


def test_unknown_parameter_is_ignored_and_left_out_of_self(imaging: TestClient) -> None:
    bundle = imaging.get("/ImagingStudy?foo=bar&status=available").json()
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == ["img-001"]
    assert bundle["link"][0] == {"relation": "self", "url": f"{BASE}/ImagingStudy?status=available"}


def test_unknown_parameter_in_strict_mode_is_400(imaging: TestClient) -> None:
    response = imaging.get("/ImagingStudy?foo=bar", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["foo"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("started=garbage", "started"),
        ("started=2024-13-01", "started"),
        ("started=xx2024", "started"),
        ("_count=-1", "_count"),
        ("_count=ten", "_count"),
        ("status:fuzzy=available", "status:fuzzy"),
        ("status:in=http://example.org/vs", "status:in"),
        ("modality:below=CT", "modality:below"),
        ("encounter:missing=maybe", "encounter:missing"),
        ("_sort=nonsense", "_sort"),
        ("_summary=maybe", "_summary"),
        ("_total=all", "_total"),
        ("_include=ImagingStudy:nothing", "_include"),
        ("_cursor=abc", "_cursor"),
        ("identifier:of-type=onlyone", "identifier:of-type"),
        ("status.name=x", "status.name"),
    ],
)
def test_malformed_values_are_400_naming_the_parameter(imaging: TestClient, query: str, parameter: str) -> None:
    response = imaging.get(f"/ImagingStudy?{query}")
    assert response.status_code == 400, query
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [parameter]


def test_terminology_modifiers_say_not_supported(imaging: TestClient) -> None:
    outcome = imaging.get("/ImagingStudy?modality:not-in=http://example.org/vs").json()
    assert outcome["issue"][0]["code"] == "not-supported"
    assert ":not-in" in outcome["issue"][0]["diagnostics"]


def test_values_are_bound_not_spliced(imaging: TestClient) -> None:
    assert ids(imaging, "/ImagingStudy?identifier=x' OR '1'='1") == []
    assert ids(imaging, "/ImagingStudy?_id=img-001') OR 1=1 --") == []
    assert len(ids(imaging, "/ImagingStudy")) == 3  # the table is still there


def _follow(client: TestClient, url: str) -> tuple[list[str], list[dict[str, Any]]]:
    seen, bundles = [], []
    next_url: str | None = url
    while next_url:
        bundle = client.get(next_url).json()
        bundles.append(bundle)
        seen += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        next_url = None
        if "next" in links:
            parts = urlsplit(links["next"])
            next_url = parts.path.removeprefix("/baseR4") + "?" + parts.query
    return seen, bundles


def test_count_default_and_paging_links(client: TestClient) -> None:
    for index in range(25):
        _put(client, _study(f"s{index:02d}", started=f"2024-01-{index + 1:02d}"))
    first = client.get("/ImagingStudy").json()
    assert len(first["entry"]) == 20  # default_count
    seen, bundles = _follow(client, "/ImagingStudy?_count=7&_sort=-started")
    assert seen == [f"s{index:02d}" for index in reversed(range(25))]
    assert len(bundles) == 4
    links = {link["relation"]: link["url"] for link in bundles[1]["link"]}
    assert {"self", "first", "previous", "next"} <= set(links)
    query = dict(parse_qsl(urlsplit(links["previous"]).query))
    previous = client.get("/ImagingStudy", params=query).json()
    assert [entry["resource"]["id"] for entry in previous["entry"]] == seen[:7]


def test_count_is_capped_by_max_count(client: TestClient) -> None:
    for index in range(3):
        _put(client, _study(f"s{index}"))
    assert len(client.get("/ImagingStudy?_count=100000").json()["entry"]) == 3


def test_reports_point_back_at_their_study(imaging: TestClient) -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "rep-1",
        "status": "final",
        "code": {"text": "CT chest report"},
        "imagingStudy": [{"reference": "ImagingStudy/img-001"}],
    }
    _put(imaging, report)
    assert ids(imaging, "/DiagnosticReport?study=ImagingStudy/img-001") == ["rep-1"]
    assert ids(imaging, "/DiagnosticReport?study=img-002") == []
    bundle = imaging.get("/ImagingStudy?_id=img-001&_revinclude=DiagnosticReport:study").json()
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]] == [
        ("img-001", "match"),
        ("rep-1", "include"),
    ]


def test_deleted_resources_are_not_found(imaging: TestClient) -> None:
    assert imaging.delete("/ImagingStudy/img-001").status_code == 200
    assert ids(imaging, "/ImagingStudy?modality=CT") == ["img-003"]
    _put(imaging, _study("img-001", modality=[{"system": DCM, "code": "MR"}]))
    assert ids(imaging, "/ImagingStudy?modality=MR") == ["img-001", "img-002"]


def test_study_level_modality_without_series_is_found(client: TestClient) -> None:
    _put(client, _study("no-series"))
    assert ids(client, "/ImagingStudy?modality=CT") == ["no-series"]


def test_capability_statement_lists_exactly_the_supported_search(client: TestClient) -> None:
    statement = client.get("/metadata").json()
    rest = statement["rest"][0]
    assert "http://hl7.org/fhir/CompartmentDefinition/patient" in rest["compartment"]
    assert {"search-system"} <= {item["code"] for item in rest["interaction"]}
    study = next(entry for entry in rest["resource"] if entry["type"] == "ImagingStudy")
    assert "search-type" in {item["code"] for item in study["interaction"]}
    names = {param["name"] for param in study["searchParam"]}
    assert {"modality", "patient", "started", "identifier", "bodysite", "dicom-class", "_id", "_lastUpdated"} <= names
    assert not names & {"_text", "_content", "_query"}
    modality = next(param for param in study["searchParam"] if param["name"] == "modality")
    assert modality["definition"] == "urn:fhir-imaging:SearchParameter:ImagingStudy-modality"
    ours = {param["name"]: param for param in study["searchParam"] if param["name"] in ("description", "accession")}
    assert ours["description"]["type"] == "string" and ours["accession"]["type"] == "token"
    assert ours["description"]["definition"] == "urn:fhir-imaging:SearchParameter:ImagingStudy-description"
    report = next(entry for entry in rest["resource"] if entry["type"] == "DiagnosticReport")
    assert "study" in {param["name"] for param in report["searchParam"]}
    assert "DiagnosticReport:study" in study["searchRevInclude"]
    assert "ImagingStudy:patient" in study["searchInclude"]
    observation = next(entry for entry in rest["resource"] if entry["type"] == "Observation")
    names = {param["name"]: param["type"] for param in observation["searchParam"]}
    assert names["component-code-value-quantity"] == "composite"  # tests/api/test_search_composite.py
    location = next(entry for entry in rest["resource"] if entry["type"] == "Location")
    assert "near" not in {param["name"] for param in location["searchParam"]}  # special: not supported


def test_reindex_rebuilds_the_indexes(client: TestClient) -> None:
    _put(client, _study("r1"))
    store = client.app.state.service.store  # type: ignore[attr-defined]
    tables = ("spidx_token", "spidx_reference", "spidx_date")
    store.transact(lambda tx: [tx.conn.execute(f"DELETE FROM {table}") for table in tables])
    assert ids(client, "/ImagingStudy?modality=CT") == []
    assert store.reindex() == 1
    assert ids(client, "/ImagingStudy?modality=CT") == ["r1"]
