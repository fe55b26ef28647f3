"""Token values of FHIR type id/oid (ImagingStudy's series and instance UIDs) live in their own compact tables, as
64-bit hashes with each resource's sorted list of them (search/index.py ``ID_TABLE``, schema migrations 7, 9 and
11): which parameters, their rows on write, update and delete, their searches (exact even when every value shares
one hash, at every depth), and the migrations of a database whose rows are still in ``spidx_token``, in the text
table of migration 7 or in the hash tables of migration 9 (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.composite import COMPOSITE_TABLES
from fhir_imaging.search.index import ID_HASH_TABLE, ID_RID_TABLE, ID_TABLE, extract_values, id_hash, param_table
from fhir_imaging.storage import open_store
from fhir_imaging.storage.schema import MIGRATIONS, SCHEMA_VERSION, id_list_migration
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
        # a: its series and 3 instances; b: its series and 1 instance; nothing of d or of a v1
        assert _counts(store) == (4, 6)
        old = store.query("SELECT count(*) FROM spidx_token WHERE param IN ('instance', 'series')", [])[0][0]
        assert old == 0
    finally:
        store.close()


def _counts(store: Any) -> tuple[int, ...]:
    """Rows of (``ID_TABLE``: one a resource and parameter, ``ID_HASH_TABLE``: one a value)."""
    return tuple(store.query(f"SELECT count(*) FROM {table}", [])[0][0] for table in (ID_TABLE, ID_HASH_TABLE))


def _uid_rows(store: Any) -> list[tuple[int, str, str]]:
    """(rid, parameter, value) of every series and instance UID stored."""
    import orjson

    from fhir_imaging.storage.bodies import unpack

    params = load_registry().params_for("ImagingStudy")
    rows = []
    for rid, body in store.query("SELECT rid, body FROM resource WHERE type = 'ImagingStudy' AND deleted = 0", []):
        study = orjson.loads(unpack(body))
        for code in ("series", "instance"):
            rows += [(rid, code, columns[1]) for _, _, columns in extract_values(study, params[code])]
    return rows


def _written(settings: Settings) -> list[tuple[int, str, str]]:
    with TestClient(create_app(settings), base_url=BASE) as client:
        for resource_id, body in (("a", _study(SERIES_UID, 3)), ("b", _study("2.25.99", 1)), ("c", NO_SERIES)):
            assert _put(client, resource_id, body) == 201
    store = open_store(settings, load_registry())
    try:
        return _uid_rows(store)
    finally:
        store.close()


def _rewind(settings: Settings, first: int, work: Any, composites: bool = True) -> None:
    """Drop the UID tables (and those of migration 8, composites), run ``work`` on the transaction, and forget the
    migrations from ``first`` on."""
    store = open_store(settings, load_registry())
    try:

        def rewind(tx: Any) -> None:
            for table in (ID_TABLE, ID_HASH_TABLE, *(COMPOSITE_TABLES.values() if composites else ())):
                tx.execute(f"DROP TABLE {table}", ())
            work(tx)
            tx.execute("DELETE FROM schema_version WHERE version >= ?", (first,))

        store.transact(rewind)
    finally:
        store.close()


def _migrated(settings: Settings, rows: list[tuple[int, str, str]]) -> None:
    with TestClient(create_app(settings), base_url=BASE) as client:  # opening it migrates
        _searches(client)
    store = open_store(settings, load_registry())
    try:
        assert _counts(store) == (4, 6)
        assert store.query(f"SELECT count(*) FROM {ID_TABLE} WHERE codes IS NULL", [])[0][0] == 0
        assert sorted(_uid_rows(store)) == sorted(rows)
        assert store.query("SELECT max(version) FROM schema_version", [])[0][0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_database_with_the_rows_in_spidx_token_migrates(settings: Settings) -> None:
    """The layout before migration 7: every token row in ``spidx_token``. Made by writing with the current code,
    then putting the rows back and dropping the tables, as the older release left them."""
    rows = _written(settings)

    def back(tx: Any) -> None:
        for rid, code, value in rows:
            tx.execute(
                "INSERT INTO spidx_token (rid, type, param, system, code, text) "
                "VALUES (?, 'ImagingStudy', ?, '', ?, NULL)",
                (rid, code, value),
            )

    _rewind(settings, 7, back)
    _migrated(settings, rows)


def test_a_database_with_the_uids_as_text_migrates(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout of migration 7: (rid, type, param, code) rows and an index on (type, param, code, rid). Two
    resources a step, so that the rows move in several steps."""
    import fhir_imaging.storage.schema

    monkeypatch.setattr(fhir_imaging.storage.schema, "RIDS_A_STEP", 2)
    rows = _written(settings)

    def back(tx: Any) -> None:
        tx.execute(
            f"CREATE TABLE {ID_TABLE} (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, "
            "code TEXT NOT NULL, PRIMARY KEY (rid, param, code))",
            (),
        )
        tx.execute(f"CREATE INDEX {ID_TABLE}_code ON {ID_TABLE} (type, param, code, rid)", ())
        for row in rows:
            tx.execute(f"INSERT INTO {ID_TABLE} (rid, type, param, code) VALUES (?, 'ImagingStudy', ?, ?)", row)

    _rewind(settings, 8, back)
    _migrated(settings, rows)


def test_a_database_with_the_uid_hashes_of_migration_9_migrates(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout of migration 9: one (lo, hi) row a resource and parameter, the hashes keyed (h, rid) and again
    (rid, h). Migration 11 fills each row's list from the bodies (two rids a step here), drops the (rid, h) table,
    and also drops a row of a parameter the registry does not index as ids and a hash no list gives."""
    import fhir_imaging.storage.schema

    monkeypatch.setattr(fhir_imaging.storage.schema, "LIST_RIDS_A_STEP", 2)
    rows = _written(settings)
    first = min(rid for rid, _, _ in rows)

    def back(tx: Any) -> None:
        ddl = tx.dialect.ddl  # 64-bit integers and no WITHOUT ROWID on PostgreSQL
        tx.execute(
            ddl(
                f"CREATE TABLE {ID_TABLE} (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, "
                "lo TEXT NOT NULL, hi TEXT NOT NULL, PRIMARY KEY (rid, param)) WITHOUT ROWID"
            ),
            (),
        )
        for table, pair in ((ID_HASH_TABLE, "h, rid"), (ID_RID_TABLE, "rid, h")):
            columns = pair.replace(",", " INTEGER NOT NULL,")
            tx.execute(
                ddl(f"CREATE TABLE {table} ({columns} INTEGER NOT NULL, PRIMARY KEY ({pair})) WITHOUT ROWID"), ()
            )
        lists: dict[tuple[int, str], list[str]] = {}
        for rid, code, value in rows:
            lists.setdefault((rid, code), []).append(value)
        lists[(first, "other-uid")] = ["9.9"]  # not an id parameter of the registry
        hashes = {(rid, id_hash(code, value)) for (rid, code), values in lists.items() for value in values}
        hashes.add((first, 12345))  # a hash no list gives
        for (rid, code), values in lists.items():
            tx.execute(
                f"INSERT INTO {ID_TABLE} (rid, type, param, lo, hi) VALUES (?, 'ImagingStudy', ?, ?, ?)",
                (rid, code, min(values), max(values)),
            )
        for rid, h in hashes:
            tx.execute(f"INSERT INTO {ID_HASH_TABLE} (h, rid) VALUES (?, ?)", (h, rid))
            tx.execute(f"INSERT INTO {ID_RID_TABLE} (rid, h) VALUES (?, ?)", (rid, h))

    _rewind(settings, MIGRATIONS.index(id_list_migration) + 1, back, composites=False)
    _migrated(settings, rows)
    store = open_store(settings, load_registry())
    try:
        assert not store.query(f"SELECT 1 FROM {ID_TABLE} WHERE param = 'other-uid'", [])
        with pytest.raises(Exception, match=ID_RID_TABLE):
            store.query(f"SELECT 1 FROM {ID_RID_TABLE}", [])
    finally:
        store.close()


def test_the_lists_round_trip() -> None:
    from fhir_imaging.search.idlist import holds, pack_codes, unpack_codes

    codes = ["2.25.1.10", "2.25.1.2", "2.25.1", "1.2", "2.25.1.2", 'é\n"x', "", "2.25.10"]
    stored = unpack_codes(pack_codes(codes))
    assert stored == sorted(set(codes))
    assert all(holds(stored, code) for code in codes)
    assert not any(holds(stored, code) for code in ("2.25", "2.25.1.1", "2.25.1.20", "3", "2.25.1.2 "))
    assert unpack_codes(pack_codes([])) == []


def test_the_shared_prefix_is_the_one_a_character_walk_finds() -> None:
    """The front coding's prefix length (a binary search over slices) against a walk, one character at a time, on
    UIDs that extend each other and random strings: the stored lists stay byte for byte what they were."""
    import random

    from fhir_imaging.search.idlist import _shared

    def walked(first: str, second: str) -> int:
        shared = 0
        for left, right in zip(first, second, strict=False):
            if left != right:
                break
            shared += 1
        return shared

    rng = random.Random(3)
    pairs = [("", ""), ("", "1"), ("1.2", "1.2"), ("1.2", "1.2.3"), ("1.2.3", "1.2"), ("é1", "é2"), ("a", "b")]
    for _ in range(20_000):
        head = "".join(rng.choice("0123456789.") for _ in range(rng.randrange(0, 70)))
        tails = ["".join(rng.choice("0123456789.é") for _ in range(rng.randrange(0, 8))) for _ in range(2)]
        pairs.append((head + tails[0], head + tails[1]))
    assert all(_shared(first, second) == walked(first, second) for first, second in pairs)


def test_values_that_share_a_hash_never_match_each_other(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id/oid value given one hash: the index names every study as a candidate for every value, and the
    stored lists decide, at every depth (``_has``, chains, ``:not``, ``:missing``, ``_sort``, the filters of a
    granular scope); rows that collide inside one resource are kept once, and updates and deletes remove them."""
    import fhir_imaging.search.ids
    import fhir_imaging.search.index
    from fhir_imaging.search.execute import matching
    from fhir_imaging.search.query import parse_search

    monkeypatch.setattr(fhir_imaging.search.index, "id_hash", lambda param, code: 7)
    monkeypatch.setattr(fhir_imaging.search.ids, "id_hash", lambda param, code: 7)
    b = {**_study("2.25.99", 1), "subject": {"reference": "Patient/p2"}}
    with TestClient(create_app(settings), base_url=BASE) as client:
        for patient in ("p1", "p2"):
            response = client.put(f"{BASE}/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
            assert response.status_code == 201, response.text
        for resource_id, body in (("a", _study(SERIES_UID, 3)), ("b", b), ("c", NO_SERIES)):
            assert _put(client, resource_id, body) == 201
        _searches(client)
        assert _ids(client, "instance=2.25.99") == []  # b's series UID: not one of its instances
        assert _ids(client, "series=2.25.99.1") == []
        assert _ids(client, "instance=2.25.1234.1.4") == []
        assert _ids(client, "instance=2.25.99.1,2.25.1234.1.3") == ["a", "b"]
        assert _ids(client, "instance:not=2.25.99.1") == ["a", "c"]
        assert _ids(client, "instance:missing=false&instance=2.25.99.1") == ["b"]
        assert _ids(client, "_sort=series&series=2.25.99") == ["b"]

        def patients(query: str) -> list[str]:
            response = client.get(f"{BASE}/Patient?{query}")
            assert response.status_code == 200, response.text
            return sorted(entry["resource"]["id"] for entry in response.json().get("entry", []))

        assert patients("_has:ImagingStudy:subject:instance=2.25.99.1") == ["p2"]
        assert patients("_has:ImagingStudy:subject:instance=2.25.1234.1.2") == ["p1"]
        assert patients("_has:ImagingStudy:subject:series=2.25.99.1") == []
        assert patients("_has:ImagingStudy:subject:instance:not=2.25.99.1") == ["p1"]
        assert _ids(client, "subject._has:ImagingStudy:subject:series=2.25.99") == ["b"]
        assert _ids(client, "subject._has:ImagingStudy:subject:series=2.25.1234.1") == ["a", "c"]
        store = open_store(settings, load_registry())
        try:  # a granular scope's filters (``user/ImagingStudy.rs?series=…``) checked on given ids
            for query, expected in (("series=2.25.99", ["b"]), ("series=2.25.99.1", []), ("instance=2.25.99.1", ["b"])):
                name, value = query.split("=")
                filters = parse_search(load_registry(), ("ImagingStudy",), [(name, value)]).filters
                found = matching(store, "ImagingStudy", filters, ["a", "b", "c"], ("",))
                assert sorted(hit.id for hit in found) == expected, query
        finally:
            store.close()
        assert _put(client, "a", _study("2.25.5", 1)) == 200  # its rows replaced (one hash: one row)
        assert _ids(client, f"instance={SERIES_UID}.2") == []
        assert _ids(client, "instance=2.25.5.1") == ["a"]
        assert client.delete(f"{BASE}/ImagingStudy/b").status_code in (200, 204)
        assert _ids(client, "series=2.25.99,2.25.5") == ["a"]
    store = open_store(settings, load_registry())
    try:
        assert _counts(store) == (2, 1)  # a's two values under one hash: one row
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
