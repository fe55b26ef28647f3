"""Token values of FHIR type id/oid (ImagingStudy's series and instance UIDs) live in their own compact table
(search/index.py ``ID_TABLE``, schema migration 7): which parameters, their rows on write, update and delete, their
searches, and the migration of a database whose rows are still in ``spidx_token`` (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.composite import COMPOSITE_TABLES
from fhir_imaging.search.index import ID_TABLE, param_table
from fhir_imaging.storage import open_store
from fhir_imaging.storage.schema import SCHEMA_VERSION
from tests.conftest import BASE

SERIES_UID = "2.25.1234.1"


def _study(series_uid: str, instances: int) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "series": [
            {
                "uid": series_uid,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                "instance": [
                    {"uid": f"{series_uid}.{n}", "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2"}}
                    for n in range(1, instances + 1)
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("resource_type", "code", "table"),
    [
        ("ImagingStudy", "instance", ID_TABLE),
        ("ImagingStudy", "series", ID_TABLE),
        ("ImagingStudy", "dicom-class", "spidx_token"),  # Coding: systems and displays
        ("ImagingStudy", "identifier", "spidx_token"),
        ("ImagingStudy", "_id", "spidx_token"),
        ("Patient", "gender", "spidx_token"),
        ("ImagingStudy", "started", "spidx_date"),
    ],
)
def test_the_id_table_holds_token_parameters_of_id_values_only(resource_type: str, code: str, table: str) -> None:
    assert param_table(load_registry().params_for(resource_type)[code]) == table


def _put(client: TestClient, resource_id: str, body: dict[str, Any]) -> int:
    response = client.put(f"{BASE}/ImagingStudy/{resource_id}", json={**body, "id": resource_id})
    assert response.status_code in (200, 201), response.text
    return response.status_code


NO_SERIES = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"}}


def _ids(client: TestClient, query: str) -> list[str]:
    response = client.get(f"{BASE}/ImagingStudy?{query}")
    assert response.status_code == 200, response.text
    return sorted(entry["resource"]["id"] for entry in response.json().get("entry", []))


def _searches(client: TestClient) -> None:
    """a has series 2.25.1234.1 (instances .1–.3), b series 2.25.99 (instance .1)."""
    assert _ids(client, f"instance={SERIES_UID}.2") == ["a"]
    assert _ids(client, f"instance=|{SERIES_UID}.3") == ["a"]
    assert _ids(client, f"instance=urn:x|{SERIES_UID}.3") == []  # no system: a system never matches
    assert _ids(client, "instance:text=2.25") == []  # no text
    assert _ids(client, "series=2.25.99,2.25.1234.1") == ["a", "b"]
    assert _ids(client, "series:not=2.25.99") == ["a", "c"]
    assert _ids(client, "series:missing=true") == ["c"]
    assert _ids(client, "series:missing=false") == ["a", "b"]
    response = client.get(f"{BASE}/ImagingStudy?_sort=-series")
    assert [entry["resource"]["id"] for entry in response.json()["entry"]] == ["b", "a", "c"]


def test_rows_follow_writes_and_searches_answer(settings: Settings) -> None:
    with TestClient(create_app(settings), base_url=BASE) as client:
        assert _put(client, "a", _study("2.25.1234.9", 1)) == 201
        assert _put(client, "a", _study(SERIES_UID, 3)) == 200  # its rows replaced
        assert _put(client, "b", _study("2.25.99", 1)) == 201
        assert _put(client, "c", NO_SERIES) == 201
        assert _put(client, "d", _study("2.25.77", 2)) == 201
        assert client.delete(f"{BASE}/ImagingStudy/d").status_code in (200, 204)
        _searches(client)
    store = open_store(settings, load_registry())
    try:
        rows = store.query(f"SELECT count(*) FROM {ID_TABLE}", [])[0][0]
        assert rows == 6  # a: its series and 3 instances; b: its series and 1 instance; nothing of d or of a v1
        old = store.query("SELECT count(*) FROM spidx_token WHERE param IN ('instance', 'series')", [])[0][0]
        assert old == 0
    finally:
        store.close()


def test_a_database_with_the_rows_in_spidx_token_migrates(settings: Settings) -> None:
    """The layout before migration 7: every token row in ``spidx_token``. Made by writing with the current code,
    then moving the rows back and dropping the table, as the older release left them."""
    with TestClient(create_app(settings), base_url=BASE) as client:
        for resource_id, body in (("a", _study(SERIES_UID, 3)), ("b", _study("2.25.99", 1)), ("c", NO_SERIES)):
            assert _put(client, resource_id, body) == 201
    store = open_store(settings, load_registry())
    try:
        store.transact(
            lambda tx: [
                tx.execute(
                    "INSERT INTO spidx_token (rid, type, param, system, code, text) "
                    f"SELECT rid, type, param, '', code, NULL FROM {ID_TABLE}",
                    (),
                ),
                tx.execute(f"DROP TABLE {ID_TABLE}", ()),
                *(tx.execute(f"DROP TABLE {table}", ()) for table in COMPOSITE_TABLES.values()),  # migration 8
                tx.execute("DELETE FROM schema_version WHERE version >= ?", (7,)),
            ]
        )
    finally:
        store.close()
    with TestClient(create_app(settings), base_url=BASE) as client:  # opening it migrates
        _searches(client)
    store = open_store(settings, load_registry())
    try:
        assert store.query(f"SELECT count(*) FROM {ID_TABLE}", [])[0][0] == 6
        assert store.query("SELECT max(version) FROM schema_version", [])[0][0] == SCHEMA_VERSION
    finally:
        store.close()


@pytest.mark.parametrize("query", ["instance=urn:x|", "instance:text=2.25", "series:of-type=a|b|c"])
def test_forms_an_id_never_matches_compile_to_false(query: str) -> None:
    """No system, no text, no type: these forms match nothing and read no row (no scan of the parameter's rows)."""
    from fhir_imaging.search import sql
    from fhir_imaging.search.planner import Planner
    from fhir_imaging.search.query import Clause, parse_search
    from fhir_imaging.storage.dialect import SQLITE

    name, value = query.split("=", 1)
    clause = parse_search(load_registry(), ("ImagingStudy",), [(name, value)]).filters[0]
    assert isinstance(clause, Clause)
    text, params = sql.render(Planner(("",), SQLITE).clause(clause, ("ImagingStudy",)), SQLITE)
    assert ID_TABLE in text and "code" not in text and params[-2:] == [1, 0], (text, params)
