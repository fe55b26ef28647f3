"""Property: whatever query string and headers a client sends to a read or search, the answer is never a 5xx, and
every 4xx is an OperationOutcome. Names and values are drawn from what the server knows (parameters, modifiers,
prefixes, control parameters, headers) mixed with arbitrary text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings

NAMES = (
    "_id", "_lastUpdated", "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
    "_include:iterate", "_cursor", "_since", "_format", "_pretty", "_type", "_has:Observation:subject:code",
    "_has:ImagingStudy:patient:_has:DiagnosticReport:imaging-study:status", "_tag", "_profile", "_security",
    "identifier", "identifier:of-type", "name", "name:exact", "name:contains", "name:missing", "birthdate",
    "gender:not", "gender:text", "general-practitioner", "general-practitioner:Practitioner.name",
    "organization.partof.name", "subject", "subject:Patient", "subject.identifier", "patient", "modality",
    "started", "status", "series", "value-quantity", "probability", "code:in", "code:below", "url:above",
)  # fmt: skip
PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
PIECES = (
    "2024", "2024-06-15T10:30:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e999", "-0", "NaN",
    "99999999999999999999", "²", "١٢", "http://loinc.org|1234-5", "|x", "x|", "Patient/1", "Patient?x=y", "*",
    "Patient:organization", "Patient:*", "*:*", "true", "false", "CT", "\\,", "\\|", "\\$", "$", "\u0000",
    "urn:uuid:", "|", ",", ".", ":", "'", '"', "%", "..", "-", "_id", "None", "[]", "{}",
)  # fmt: skip
PATHS = (
    "/Patient", "/ImagingStudy", "/Observation", "/", "/_history", "/Patient/_history", "/Patient/p1",
    "/Patient/p1/_history", "/Patient/p1/_history/1", "/Patient/p1/ImagingStudy", "/metadata", "/Nope",
    "/Patient/$validate", "/ImagingStudy/x/_history/99999999999999999999",
)  # fmt: skip
HEADERS = ("if-match", "if-none-match", "if-modified-since", "prefer", "accept", "if-none-exist", "accept-charset")
HEADER_PIECES = (
    'W/"1"', '"1"', "*", "W/\"\xb2\"", "return=minimal", "handling=strict", "return=OperationOutcome",
    "application/fhir+json", "application/xml", "*/*", "text/html;q=0.9", "Sun, 06 Nov 1994 08:49:37 GMT", "\xff",
    "99999999999999999999", ",", ";", "=",
)  # fmt: skip

text = st.text(max_size=12)
value = st.builds(
    lambda prefix, parts: prefix + ",".join(parts),
    st.sampled_from(PREFIXES),
    st.lists(st.one_of(st.sampled_from(PIECES), text), max_size=4),
)
name = st.one_of(st.sampled_from(NAMES), text.filter(bool))
query = st.lists(st.tuples(name, value), max_size=6)
header_text = st.lists(st.one_of(st.sampled_from(HEADER_PIECES), st.text(st.characters(max_codepoint=255), max_size=8)))
headers = st.dictionaries(st.sampled_from(HEADERS), header_text.map("".join), max_size=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    app = create_app(Settings(database=f"sqlite:///{database}", sqlite_synchronous="normal"))
    with TestClient(app, base_url="http://testserver/baseR4", raise_server_exceptions=False) as client:
        client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]})
        client.post(
            "/ImagingStudy",
            json={"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}},
        )
        yield client


def _encoded(items: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(key, safe=':.$')}={quote(item, safe=':|,')}" for key, item in items)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), items=query, sent=headers, method=st.sampled_from(["GET", "GET", "HEAD", "POST"]))
def test_no_query_or_header_gives_a_server_error(
    server: TestClient, path: str, items: list[tuple[str, str]], sent: dict[str, str], method: str
) -> None:
    target = f"{path}?{_encoded(items)}" if items else path
    if method == "POST" and path.startswith("/Patient") and path.count("/") == 1:
        target = f"{path}/_search"
        body: Any = _encoded(items).encode()
        raw = [(b"content-type", b"application/x-www-form-urlencoded")]
    else:
        body, raw = None, []
    raw += [(key.encode(), item.encode("latin-1")) for key, item in sent.items()]
    response = server.request(method, target, content=body, headers=raw)
    assert response.status_code < 500, (method, target, sent, response.text[:300])
    if response.status_code >= 400 and method != "HEAD":
        assert response.json()["resourceType"] == "OperationOutcome"
