"""``_total=estimate`` (search/estimate.py): counted on SQLite and for small PostgreSQL estimates, PostgreSQL's planner
estimate beyond; on both backends."""

from __future__ import annotations

import copy

from starlette.testclient import TestClient

from fhir_imaging.search.estimate import estimate_total, planner_rows
from fhir_imaging.search.planner import Planner
from fhir_imaging.search.query import parse_search
from tests.conftest import BASE, SEED_STUDY

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _load(client: TestClient, studies: int) -> None:
    entries = []
    for number in range(studies):
        study = copy.deepcopy(SEED_STUDY)
        study["id"] = f"s{number}"
        study["modality"] = [{"system": DCM, "code": "CT" if number % 2 else "MR"}]
        entries.append({"resource": study, "request": {"method": "PUT", "url": f"ImagingStudy/s{number}"}})
    response = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text


def _estimate(client: TestClient, query: list[tuple[str, str]], exact_up_to: int) -> int:
    service = client.app.state.service  # type: ignore[attr-defined]
    request = parse_search(service.registry, ("ImagingStudy",), query)
    return estimate_total(service.store, Planner((BASE,), service.store.dialect), request, exact_up_to)


def test_estimate_is_exact_when_small_and_the_planner_estimate_beyond(client: TestClient) -> None:
    _load(client, 80)
    assert _estimate(client, [("modality", "CT")], 10_000) == 40  # a small estimate: counted
    assert _estimate(client, [], 10_000) == 80
    store = client.app.state.service.store  # type: ignore[attr-defined]
    beyond = _estimate(client, [("modality", "CT")], 0)  # every estimate is "large": the planner's rows
    if store.dialect.name == "postgres":
        service = client.app.state.service  # type: ignore[attr-defined]
        request = parse_search(service.registry, ("ImagingStudy",), [("modality", "CT")])
        assert beyond == planner_rows(store, Planner((BASE,), store.dialect), request) and beyond >= 1
    else:
        assert beyond == 40  # SQLite has no estimates: counted


def test_total_estimate_through_the_api(client: TestClient) -> None:
    _load(client, 30)
    bundle = client.get("/ImagingStudy?modality=MR&_total=estimate&_count=2").json()
    assert bundle["total"] == 15 and len(bundle["entry"]) == 2
    assert client.get("/ImagingStudy?_total=estimate&_summary=count").json()["total"] == 30
