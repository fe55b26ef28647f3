"""Requests a stranger may send: each answers a 4xx OperationOutcome naming what is at fault (never a 5xx), costs
bounded work, and leaves the server answering others. Run on both backends (the ``client`` fixture)."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _bundle(kind: str, entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})


def _assert_outcome(response: Any, status: int | tuple[int, ...] = (400, 404, 413, 415, 422)) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
    return outcome


@pytest.fixture
def patient_id(client: TestClient) -> str:
    response = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Chalmers"}]})
    assert response.status_code == 201
    identifier: str = response.json()["id"]
    return identifier


# (method, path, body, headers, the parameter or element the OperationOutcome names). Each answered 500 before.
CRAFTED: list[tuple[str, str, bytes | None, list[tuple[bytes, bytes]], str]] = [
    ("GET", "/ImagingStudy?_count=%C2%B2", None, [], "_count"),
    ("GET", "/_history?_count=%C2%B2", None, [], "_count"),
    ("GET", "/_history?_cursor=%C2%B2", None, [], "_cursor"),
    ("GET", "/_history?_cursor=99999999999999999999", None, [], "_cursor"),
    ("GET", "/_history?_since=0001-01-01T00:00:00%2B01:00", None, [], "_since"),
    ("GET", "/_history?_since=9999-12-31T23:59:59-14:00", None, [], "_since"),
    ("GET", "/Patient/{pid}/_history/99999999999999999999", None, [], "vid"),
    ("GET", "/Patient/{pid}/_history/%C2%B2", None, [], "vid"),
    ("GET", "/Patient?_sort=family&_cursor=" + _cursor({"d": "n", "k": [{"a": 1}], "r": 1}), None, [], "_cursor"),
    ("GET", "/Patient?_sort=birthdate&_cursor=" + _cursor({"d": "n", "k": ["x"], "r": 1}), None, [], "_cursor"),
    ("GET", "/Patient?_sort=family&_cursor=" + _cursor({"d": "n", "k": [5], "r": 1}), None, [], "_cursor"),
    ("GET", "/Patient?_cursor=" + _cursor({"d": "n", "k": [], "r": 2**63}), None, [], "_cursor"),
    ("GET", "/Patient?_cursor=" + _cursor({"d": "x", "k": [], "r": 1}), None, [], "_cursor"),
    ("GET", "/ImagingStudy?subject:Patient.organization.partof.partof.partof.partof.name=x", None, [], "chain"),
    ("GET", "/Patient?" + "_has:Observation:subject:" * 4 + "code=x", None, [], "_has"),
    ("GET", "/Patient?" + "&".join(f"name=a{i}" for i in range(990)), None, [], "name"),
    ("GET", "/Patient?name=" + ",".join(f"a{i}" for i in range(10_000)), None, [], "name"),
    ("GET", "/Patient?_sort=" + ",".join(["family"] * 2000), None, [], "_sort"),
    ("PUT", "/Patient/{pid}", b'{"resourceType":"Patient","id":"{pid}"}', [(b"if-match", b'W/"\xc2\xb2"')], "If-Match"),
    (
        "PUT",
        "/Patient/{pid}",
        b'{"resourceType":"Patient","id":"{pid}"}',
        [(b"if-match", b'W/"' + b"9" * 30 + b'"')],
        "If-Match",
    ),
    (
        "POST",
        "",
        _bundle(
            "batch",
            [{"fullUrl": 5, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}],
        ),
        [],
        "Bundle.entry[0].fullUrl",
    ),
    (
        "POST",
        "",
        _bundle(
            "transaction",
            [{"fullUrl": 5, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}],
        ),
        [],
        "Bundle.entry[0].fullUrl",
    ),
    (
        "POST",
        "",
        _bundle("transaction", [{"request": {"method": "GET", "url": "Patient/{pid}/_history/99999999999999999999"}}]),
        [],
        "Bundle.entry[0]",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "names"), CRAFTED, ids=[c[1][:60] or c[0] for c in CRAFTED]
)
def test_crafted_requests_answer_4xx_naming_the_fault(
    client: TestClient,
    patient_id: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: list[tuple[bytes, bytes]],
    names: str,
) -> None:
    path = path.replace("{pid}", patient_id)
    content = body.replace(b"{pid}", patient_id.encode()) if body is not None else None
    sent = [*headers, *([(b"content-type", b"application/fhir+json")] if content is not None else [])]
    response = client.request(method, path, content=content, headers=sent)
    outcome = _assert_outcome(response)
    where = " ".join(" ".join(issue.get("expression", [])) + " " + issue["diagnostics"] for issue in outcome["issue"])
    assert names in where, where


def test_huge_count_is_reduced_to_the_maximum(client: TestClient, patient_id: str) -> None:
    for path in ("/ImagingStudy?_count=" + "9" * 5000, f"/Patient/{patient_id}/_history?_count=" + "9" * 5000):
        response = client.get(path)
        assert response.status_code == 200, response.text[:300]


def test_unicode_digits_in_a_version_etag_are_not_a_version(client: TestClient, patient_id: str) -> None:
    response = client.get(f"/Patient/{patient_id}", headers=[(b"if-none-match", b'W/"\xc2\xb9"')])
    assert response.status_code == 200  # not a match (no 304), and no error
    response = client.get(f"/Patient/{patient_id}", headers=[(b"if-modified-since", b"\xc2\xb2")])
    assert response.status_code == 200


# -- the search limits, at their maxima: a search just inside every limit works on both databases ----------------


def test_searches_at_the_limits_run(client: TestClient, settings: Settings) -> None:
    """Searches just inside every limit answer, on both databases, within a few seconds (an earlier limit let 100
    parameters of 200 values each through: one such search ran for 12 minutes, another was a 500)."""
    most = settings.max_search_values

    def values(make: Any) -> str:
        return ",".join(make(number) for number in range(most))

    queries = [
        "name:contains=" + values(lambda i: f"n{i}"),
        "birthdate=" + values(lambda i: f"ge19{i % 100:02d}-01"),
        "identifier:not=" + values(lambda i: f"s|{i}"),
        "&".join(f"name:contains=a{j},b{j}" for j in range(settings.max_search_parameters)),
        "&".join(f"birthdate=ge19{j % 100:02d},le20{j % 100:02d}" for j in range(settings.max_search_parameters)),
        "_sort=" + ",".join(["family", "-birthdate", "given", "-_lastUpdated", "_id"][: settings.max_sort_keys]),
        "general-practitioner:Organization.partof.partof.partof.name=" + values(str),
        "_has:Observation:subject:_has:Observation:has-member:performer:Practitioner.organization.name=" + values(str),
        "_has:Observation:subject:_has:Observation:has-member:code=" + values(str),
    ]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for query in queries:  # as forms: some are longer than a URL may be
        started = time.monotonic()
        response = client.post("/Patient/_search", content=query.encode(), headers=form)
        assert response.status_code == 200, (query[:80], response.text[:300])
        assert time.monotonic() - started < 10, query[:80]
    over = [
        {"name": ",".join(["x"] * (most + 1))},
        {"_id": ",".join(["x"] * (most // 2)), "name": ",".join(["x"] * (most // 2 + 1))},
        {"_sort": ",".join(["family"] * (settings.max_sort_keys + 1))},
    ]
    for params in over:
        _assert_outcome(client.get("/Patient", params=params), 400)


def test_a_search_past_the_time_limit_is_stopped(settings: Settings) -> None:
    with TestClient(create_app(settings), base_url="http://testserver/baseR4") as client:
        entries = [
            {"resource": {"resourceType": "Patient", "name": [{"family": f"f{i}", "given": [f"g{i}"]}]},
             "request": {"method": "POST", "url": "Patient"}}
            for i in range(1000)
        ]  # fmt: skip
        assert client.post("", content=_bundle("transaction", entries), headers=FHIR_JSON).status_code == 200
    hurried = dataclasses.replace(settings, search_timeout=0.001)
    with TestClient(create_app(hurried), base_url="http://testserver/baseR4") as client:
        sort = "given,-family,birthdate,-_lastUpdated,_id"
        response = client.get(f"/Patient?name:contains=f,g,1,2,3,4,5,6,7,8,9&_sort={sort}&_count=1000&_total=accurate")
        outcome = _assert_outcome(response, 400)
        assert outcome["issue"][0]["code"] == "too-costly"


def test_too_many_parameters_in_a_post_search_form(client: TestClient) -> None:
    form = "&".join(f"name=a{i}" for i in range(5000)).encode()
    response = client.post(
        "/Patient/_search", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    _assert_outcome(response, 400)


# -- _include / _revinclude: capped per page ----------------------------------------------------------------------


@pytest.fixture
def capped(settings: Settings) -> Iterator[TestClient]:
    limited = dataclasses.replace(settings, max_include=10, max_bundle_read_resources=25)
    with TestClient(create_app(limited), base_url="http://testserver/baseR4") as test_client:
        yield test_client


def _organization_with_patients(client: TestClient, count: int) -> None:
    entries = [
        {"fullUrl": "urn:uuid:org", "resource": {"resourceType": "Organization", "id": "o1", "name": "Ward"},
         "request": {"method": "PUT", "url": "Organization/o1"}},
        *(
            {"resource": {"resourceType": "Patient", "managingOrganization": {"reference": "Organization/o1"}},
             "request": {"method": "POST", "url": "Patient"}}
            for _ in range(count)
        ),
    ]  # fmt: skip
    response = client.post("", content=_bundle("transaction", entries), headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:300]


def test_revinclude_is_capped_with_a_warning(capped: TestClient) -> None:
    _organization_with_patients(capped, 30)
    bundle = capped.get("/Organization?_id=o1&_revinclude=Patient:organization").json()
    modes = [entry["search"]["mode"] for entry in bundle["entry"]]
    assert modes.count("match") == 1
    assert modes.count("include") == 10
    assert modes[-1] == "outcome"
    outcome = bundle["entry"][-1]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning"
    assert outcome["issue"][0]["expression"] == ["_revinclude"]
    # Under the cap: everything, and no outcome.
    bundle = capped.get("/Patient?organization=Organization/o1&_count=5&_include=Patient:organization").json()
    assert [entry["search"]["mode"] for entry in bundle["entry"]] == ["match"] * 5 + ["include"]


def test_get_entries_of_a_bundle_return_a_bounded_number_of_resources(capped: TestClient) -> None:
    _organization_with_patients(capped, 30)
    search = {"request": {"method": "GET", "url": "Organization?_id=o1&_revinclude=Patient:organization"}}
    batch = capped.post("", content=_bundle("batch", [search] * 5), headers=FHIR_JSON).json()
    statuses = [entry["response"]["status"] for entry in batch["entry"]]
    assert statuses[:3] == ["200 OK"] * 3  # 12 resources each (with the outcome): the budget of 25 is spent
    assert [status.split()[0] for status in statuses[3:]] == ["413"] * 2
    transaction = capped.post("", content=_bundle("transaction", [search] * 5), headers=FHIR_JSON)
    _assert_outcome(transaction, 413)


def test_read_only_entries_do_not_wait_for_the_write_lock(client: TestClient, patient_id: str) -> None:
    """A batch's GET entries, and a transaction of GET entries only, read without a write transaction: they answer
    while a long write holds the lock."""
    store = client.app.state.service.store  # type: ignore[attr-defined]
    holding, release = threading.Event(), threading.Event()

    def long_write(tx: Any) -> None:
        tx.create("Basic", "holder", {"resourceType": "Basic", "code": {"text": "x"}})
        holding.set()
        release.wait(10)

    writer = threading.Thread(target=store.transact, args=(long_write,))
    writer.start()
    try:
        assert holding.wait(5)
        reads = [{"request": {"method": "GET", "url": f"Patient/{patient_id}"}},
                 {"request": {"method": "GET", "url": "Patient?name=Chalmers"}}]  # fmt: skip
        for kind in ("batch", "transaction"):
            started = time.monotonic()
            response = client.post("", content=_bundle(kind, reads), headers=FHIR_JSON)
            assert response.status_code == 200, response.text[:300]
            assert time.monotonic() - started < 2, kind
            assert [entry["response"]["status"] for entry in response.json()["entry"]] == ["200 OK"] * 2
    finally:
        release.set()
        writer.join()


def test_a_failing_read_fails_a_read_only_transaction(client: TestClient) -> None:
    reads = [
        {"request": {"method": "GET", "url": "Patient?name=x"}},
        {"request": {"method": "GET", "url": "Patient/nope"}},
    ]
    response = client.post("", content=_bundle("transaction", reads), headers=FHIR_JSON)
    outcome = _assert_outcome(response, 404)
    assert "Bundle.entry[1]" in outcome["issue"][0]["expression"]


# -- bodies: declared, bounded ------------------------------------------------------------------------------------


def test_post_search_body_is_bounded(settings: Settings) -> None:
    limited = dataclasses.replace(settings, max_body_size=1024)
    with TestClient(create_app(limited), base_url="http://testserver/baseR4") as client:
        form = b"name=" + b"a" * 4096
        response = client.post(
            "/Patient/_search", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        _assert_outcome(response, 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(64):
                yield b"a" * 1024

        response = client.post(
            "/Patient/_search", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        _assert_outcome(response, 413)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_cross_site_simple_requests_write_nothing(
    client: TestClient, patient_id: str, content_type: str | None
) -> None:
    """A web page may send these to any server its visitor reaches, without asking (no CORS preflight)."""
    headers = {"Content-Type": content_type} if content_type else {}
    delete_all = _bundle("transaction", [{"request": {"method": "DELETE", "url": f"Patient/{patient_id}"}}])
    for path, body in (
        ("", delete_all),
        ("/Patient", b'{"resourceType":"Patient"}'),
        (f"/Patient/{patient_id}/$validate", b"{}"),
    ):
        response = client.post(path, content=body, headers=headers)
        outcome = _assert_outcome(response, 415)
        assert outcome["issue"][0]["expression"] == ["Content-Type"]
    response = client.put(
        f"/Patient/{patient_id}", content=b'{"resourceType":"Patient","id":"%s"}' % patient_id.encode(), headers=headers
    )
    _assert_outcome(response, 415)
    assert client.get(f"/Patient/{patient_id}").json()["meta"]["versionId"] == "1"
    assert client.get("/Patient").json()["total"] == 1


def test_options_answers_the_methods_of_a_path(client: TestClient, patient_id: str) -> None:
    response = client.options(f"/Patient/{patient_id}")
    assert response.status_code == 204
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}
    assert "access-control-allow-origin" not in response.headers
    assert set(client.options("").headers["allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


def test_no_cors_unless_configured(client: TestClient, patient_id: str) -> None:
    assert client.get("/metadata").json()["rest"][0]["security"] == {"cors": False}
    origin = {"Origin": "https://evil.example"}
    response = client.get(f"/Patient/{patient_id}", headers=origin)
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)
    preflight = client.options(
        "",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_the_configured_origins(settings: Settings, tmp_path: Any) -> None:
    allowed = dataclasses.replace(settings, cors_origin="https://viewer.example, https://other.example/")
    with TestClient(create_app(allowed), base_url="http://testserver/baseR4") as client:
        assert client.get("/metadata").json()["rest"][0]["security"] == {"cors": True}
        ask = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type, if-match"}
        preflight = client.options("/Patient/x", headers={"Origin": "https://other.example", **ask})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://other.example"
        refused = client.options("/Patient/x", headers={"Origin": "https://evil.example", **ask})
        _assert_outcome(refused, 400)
        response = client.post(
            "/Patient", json={"resourceType": "Patient"}, headers={"Origin": "https://viewer.example"}
        )
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == "https://viewer.example"
        assert "location" in response.headers["access-control-expose-headers"].lower()


def test_responses_are_not_cached_nor_sniffed(client: TestClient, patient_id: str) -> None:
    for response in (client.get(f"/Patient/{patient_id}"), client.get("/Patient"), client.get("/nothing-here")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_capability_statements_kept_for_few_hosts(client: TestClient) -> None:
    for number in range(300):
        response = client.get("/metadata", headers={"Host": f"host{number}.example"})
        assert response.status_code == 200
    assert len(client.app.state.capability_cache) <= 16  # type: ignore[attr-defined]
    assert (
        client.get("/metadata", headers={"Host": "host299.example"})
        .json()["implementation"]["url"]
        .startswith("http://host299.example/")
    )
