"""``_total=estimate`` (search/estimate.py): exact up to a bound, estimated beyond it without a full count; on both
backends."""

from __future__ import annotations

import copy

from starlette.testclient import TestClient

from fhir_imaging.search.estimate import estimate_total
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


def test_estimate_is_exact_up_to_its_bound_and_close_beyond(client: TestClient) -> None:
    _load(client, 80)
    assert _estimate(client, [("modality", "CT")], 100) == 40  # fewer than the bound: counted
    assert _estimate(client, [], 100) == 80
    beyond = _estimate(client, [("modality", "CT")], 10)  # more: estimated, never below what was counted
    assert beyond >= 11
    if client.app.state.service.store.dialect.name == "sqlite":  # type: ignore[attr-defined]
        assert 30 <= beyond <= 50  # matches spread evenly over the rids: the extrapolation is close


def test_total_estimate_through_the_api(client: TestClient) -> None:
    _load(client, 30)
    bundle = client.get("/ImagingStudy?modality=MR&_total=estimate&_count=2").json()
    assert bundle["total"] == 15 and len(bundle["entry"]) == 2
    assert client.get("/ImagingStudy?_total=estimate&_summary=count").json()["total"] == 30
