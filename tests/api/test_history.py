"""history: instance, type, system (https://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.search.paging import decode_history_cursor, encode_cursor, encode_history_cursor
from tests.conftest import BASE, POSTGRES_URL, fresh_postgres_database

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set")


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201)


def test_instance_history_lists_every_version_newest_first(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    for gender in ("male", "female", "other"):
        _put(client, dict(patient, gender=gender))
    bundle = client.get("/Patient/p1/_history").json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert bundle["total"] == 3
    assert [entry["resource"]["meta"]["versionId"] for entry in bundle["entry"]] == ["3", "2", "1"]
    assert [entry["resource"]["gender"] for entry in bundle["entry"]] == ["other", "female", "male"]
    assert all(entry["fullUrl"] == f"{BASE}/Patient/p1" for entry in bundle["entry"])
    assert bundle["entry"][0]["request"] == {"method": "PUT", "url": "Patient/p1"}
    assert bundle["entry"][2]["response"]["status"].startswith("201")
    assert bundle["entry"][0]["response"]["etag"] == 'W/"3"'


def test_instance_history_of_unknown_resource_is_404(client: TestClient) -> None:
    assert client.get("/Patient/nobody/_history").status_code == 404


def test_type_history_holds_only_that_type(client: TestClient, patient: dict[str, Any], study: dict[str, Any]) -> None:
    client.post("/Patient", json=patient)
    client.post("/ImagingStudy", json=study)
    client.post("/ImagingStudy", json=study)
    bundle = client.get("/ImagingStudy/_history").json()
    assert len(bundle["entry"]) == 2
    assert {entry["resource"]["resourceType"] for entry in bundle["entry"]} == {"ImagingStudy"}
    assert all(entry["request"] == {"method": "POST", "url": "ImagingStudy"} for entry in bundle["entry"])


def test_system_history_holds_every_type_newest_first(
    client: TestClient, patient: dict[str, Any], study: dict[str, Any]
) -> None:
    client.post("/Patient", json=patient)
    client.post("/ImagingStudy", json=study)
    bundle = client.get("/_history").json()
    assert [entry["resource"]["resourceType"] for entry in bundle["entry"]] == ["ImagingStudy", "Patient"]


def test_history_count_pages_with_next_links_to_the_end(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    for _ in range(7):
        _put(client, patient)
    seen: list[str] = []
    url: str | None = "/Patient/p1/_history?_count=3"
    pages = 0
    while url:
        bundle = client.get(url).json()
        pages += 1
        assert len(bundle.get("entry", [])) <= 3
        seen += [entry["resource"]["meta"]["versionId"] for entry in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(f"{BASE}/Patient/p1/_history")
        url = None
        if "next" in links:
            parts = urlsplit(links["next"])
            url = parts.path.removeprefix("/baseR4") + "?" + parts.query
    assert seen == ["7", "6", "5", "4", "3", "2", "1"]
    assert pages == 3


def test_history_paging_is_stable_while_others_write(client: TestClient, patient: dict[str, Any]) -> None:
    for index in range(4):
        _put(client, dict(patient, id=f"p{index}"))
    first = client.get("/Patient/_history?_count=2").json()
    _put(client, dict(patient, id="late"))
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    parts = urlsplit(next_url)
    second = client.get(parts.path.removeprefix("/baseR4") + "?" + parts.query).json()
    ids = [entry["resource"]["id"] for entry in first["entry"] + second["entry"]]
    assert ids == ["p3", "p2", "p1", "p0"]


def test_history_since_keeps_later_versions(client: TestClient, patient: dict[str, Any]) -> None:
    _put(client, dict(patient, id="early"))
    time.sleep(0.01)
    moment = client.get("/Patient/early").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    _put(client, dict(patient, id="late"))
    bundle = client.get("/Patient/_history", params={"_since": moment}).json()
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == ["late", "early"]
    later = client.get("/Patient/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert "entry" not in later


def test_history_with_bad_since_or_count_is_400(client: TestClient) -> None:
    since = client.get("/_history", params={"_since": "yesterday"})
    assert since.status_code == 400 and since.json()["issue"][0]["expression"] == ["_since"]
    count = client.get("/_history", params={"_count": "-1"})
    assert count.status_code == 400 and count.json()["issue"][0]["expression"] == ["_count"]


def test_history_unknown_parameter_ignored_unless_strict(client: TestClient) -> None:
    assert client.get("/_history", params={"foo": "1"}).status_code == 200
    strict = client.get("/_history", params={"foo": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["foo"]


def test_history_cursor_is_a_page_cursor_and_refuses_any_other(client: TestClient, patient: dict[str, Any]) -> None:
    patient["id"] = "p1"
    for _ in range(3):
        _put(client, patient)
    first = client.get("/Patient/p1/_history", params={"_count": "2"}).json()
    cursor = parse_qs(urlsplit(next(link["url"] for link in first["link"] if link["relation"] == "next")).query)
    position = decode_history_cursor(cursor["_cursor"][0])
    assert cursor["_cursor"] == [encode_history_cursor(position)]
    second = client.get("/Patient/p1/_history", params={"_count": "2", "_cursor": encode_history_cursor(position)})
    assert [entry["resource"]["meta"]["versionId"] for entry in second.json()["entry"]] == ["1"]
    tx, seq = position
    legacy = client.get("/Patient/p1/_history", params={"_cursor": encode_cursor([], seq, False)})  # a tx 0 position
    assert legacy.status_code == 200
    backward, negative = encode_cursor([tx], seq, True), encode_cursor([tx], -1, False)
    bad_keys = (encode_cursor(["x"], seq, False), encode_cursor([-1], seq, False), encode_cursor([1.5], seq, False))
    for bad in ("12", "abc", backward, negative, encode_cursor([], -1, False), *bad_keys):
        response = client.get("/_history", params={"_cursor": bad})
        assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["_cursor"], bad


def _pages(client: TestClient, url: str, params: dict[str, str]) -> list[str]:
    """``Type/id/version`` of every entry, following the ``next`` links from ``url``."""
    seen: list[str] = []
    response = client.get(url, params=params)
    while True:
        bundle = response.json()
        seen += [
            f"{entry['resource']['resourceType']}/{entry['resource']['id']}/{entry['resource']['meta']['versionId']}"
            for entry in bundle.get("entry", [])
            if "resource" in entry
        ]
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return seen
        response = client.get(following[0])


@needs_postgres
def test_history_links_never_skip_a_version_committed_late(patient: dict[str, Any]) -> None:
    """A write that took its history position first and commits last (PostgreSQL): the pages and their links never
    skip it, with or without ``_since``."""
    from tests.storage.test_history_order import in_flight

    with fresh_postgres_database() as url, TestClient(create_app(Settings(database=url)), base_url=BASE) as client:
        for number in range(4):
            _put(client, dict(patient, id=f"p{number}"))
        store = client.app.state.service.store  # type: ignore[attr-defined]
        since = client.get("/Patient/p0").json()["meta"]["lastUpdated"]
        deadline = time.monotonic() + 10  # no older transaction of the cluster (an autovacuum's) holds them back
        while len(_pages(client, "/_history", {})) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with in_flight(store, lambda tx: tx.update("Patient", "p1", dict(patient, id="p1", gender="female"))) as a:
            _put(client, dict(patient, id="b"))  # a later position, committed first
            served = _pages(client, "/_history", {"_count": "2"})
            served_since = _pages(client, "/Patient/_history", {"_count": "1", "_since": since})
            a()
        assert served == ["Patient/p3/1", "Patient/p2/1", "Patient/p1/1", "Patient/p0/1"]
        assert served_since == served
        everything = _pages(client, "/_history", {"_count": "2"})
        assert sorted(everything) == sorted([*served, "Patient/p1/2", "Patient/b/1"])
        assert everything[-len(served) :] == served  # what was served stays where it was; the rest came after it
        assert _pages(client, "/Patient/_history", {"_count": "3", "_since": since}) == everything
