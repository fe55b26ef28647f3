"""Index rows written inside a write transaction, as the backends write them: PostgreSQL gathers them and sends them
by COPY (storage/postgres.py ``PgTransaction``). Whatever the transaction does afterwards — search, replace or delete
the resource, fail — it sees and leaves exactly the rows the indexer gives, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.resource import format_instant, now, stamped
from fhir_imaging.search.index import INDEX_TABLES, Indexer
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.bodies import pack
from fhir_imaging.storage.bulk import NewVersion, copy_statement, first_column, insert_table

HOSTILE = "tab\there, new\nline, back\\slash, \\N, \\., café ∑ 𝄞"  # COPY's text format escapes all of these


def _patient(family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["A", "B"]}],
        "gender": "other",
        "birthDate": "1970-01-02",
        "identifier": [{"system": "urn:x", "value": family}],
    }


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": HOSTILE}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-06T07:08:09.123+02:00",
        "valueQuantity": {"value": 1.25e-3, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
    }


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = open_store(Settings(database=database, sqlite_synchronous="normal", pool_size=2), load_registry())
    try:
        yield opened
    finally:
        opened.close()


def _rows(conn: Any, rid: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row of ``rid``, by table, sorted (rid dropped)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for table in INDEX_TABLES:
        rows = conn.execute(f"SELECT * FROM {table} WHERE rid = {rid}").fetchall()
        if rows:
            found[table] = sorted((tuple(row)[1:] for row in rows), key=repr)
    return found


def _expected(rid: int, resource: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    indexer = Indexer(load_registry())
    found: dict[str, list[tuple[Any, ...]]] = {}
    for statement, rows in indexer.statements(rid, resource):
        table = statement.split()[2]
        found.setdefault(table, []).extend(row[1:] for row in rows)
    return {table: sorted(rows, key=repr) for table, rows in found.items()}


def _rid(conn: Any, store: Store, resource_type: str, resource_id: str) -> int:
    sql = store.dialect.sql("SELECT rid FROM resource WHERE type = ? AND id = ?")  # type: ignore[attr-defined]
    return int(conn.execute(sql, (resource_type, resource_id)).fetchone()[0])


def _assert_rows_of_current_version(conn: Any, store: Store, patient_id: str, version: int) -> None:
    """The Patient's index rows are exactly those its current body (at ``version``) gives."""
    rid = _rid(conn, store, "Patient", patient_id)
    current = store.read("Patient", patient_id)
    assert current is not None and current.body is not None and current.version == version
    assert _rows(conn, rid) == _expected(rid, orjson.loads(current.body))


def test_rows_are_the_indexers_and_visible_later_in_the_same_transaction(store: Store) -> None:
    def work(tx: Any) -> tuple[int, int, dict[str, list[tuple[Any, ...]]]]:
        written = tx.create("Observation", "o1", _observation())
        tx.create("Patient", "p1", _patient(HOSTILE))
        hits = tx.query(
            store.dialect.sql("SELECT count(*) FROM spidx_token WHERE param = ? AND code = ?"),  # type: ignore[attr-defined]
            ("code", "8867-4"),
        )
        rid = _rid(tx.conn, store, "Observation", "o1")
        return int(hits[0][0]), rid, written.version.body

    hits, rid, body = store.transact(work)
    assert hits == 1  # the search ran after the write, before the commit
    with store._reader() as conn:  # type: ignore[attr-defined]
        assert _rows(conn, rid) == _expected(rid, orjson.loads(body))
        patient_rid = _rid(conn, store, "Patient", "p1")
        patient = store.read("Patient", "p1")
        assert patient is not None and patient.body is not None
        assert _rows(conn, patient_rid) == _expected(patient_rid, orjson.loads(patient.body))
        names = conn.execute(f"SELECT exact FROM spidx_string WHERE rid = {patient_rid} AND param = 'family'")
        assert [row[0] for row in names.fetchall()] == [HOSTILE]


def test_a_resource_replaced_or_deleted_in_its_transaction_keeps_only_its_last_rows(store: Store) -> None:
    def work(tx: Any) -> None:
        tx.create("Patient", "p1", _patient("First"))
        tx.update("Patient", "p1", _patient("Second"))
        tx.update("Patient", "p1", _patient("Third"))
        tx.create("Patient", "p2", _patient("Gone"))
        tx.delete("Patient", "p2")

    store.transact(work)
    with store._reader() as conn:  # type: ignore[attr-defined]
        _assert_rows_of_current_version(conn, store, "p1", version=3)
        assert _rows(conn, _rid(conn, store, "Patient", "p2")) == {}


def test_a_failed_transaction_leaves_no_rows(store: Store) -> None:
    def work(tx: Any) -> None:
        tx.create("Patient", "p1", _patient("Lost"))
        raise RuntimeError("the transaction fails after its writes")

    with pytest.raises(RuntimeError):
        store.transact(work)
    with store._reader() as conn:  # type: ignore[attr-defined]
        for table in INDEX_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_a_large_transaction_sends_its_rows_in_several_copies(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fhir_imaging.storage.postgres.COPY_ROWS", 7)  # PostgreSQL flushes every few resources
    store.transact(lambda tx: [tx.create("Patient", f"p{n}", _patient(f"Family{n}")) for n in range(20)])
    assert store.reindex() == 20
    with store._reader() as conn:  # type: ignore[attr-defined]
        for n in range(20):
            _assert_rows_of_current_version(conn, store, f"p{n}", version=1)


def test_copy_statement_is_derived_from_the_insert() -> None:
    assert copy_statement("INSERT INTO spidx_uri (rid, type, param, uri) VALUES (%s, %s, %s, %s)") == (
        "COPY spidx_uri (rid, type, param, uri) FROM STDIN"
    )
    with pytest.raises(ValueError, match="not an INSERT"):
        copy_statement("INSERT INTO t (a) SELECT 1")
    assert insert_table("INSERT INTO spidx_token_id_hash (h, rid) VALUES (?, ?)") == "spidx_token_id_hash"


def test_first_column_of_an_index_definition_on_both_backends() -> None:
    """What a load into an empty database keeps (indexes keyed by rid) and drops (the others) is read from each
    index's definition as SQLite and PostgreSQL give it back."""
    assert first_column("CREATE INDEX spidx_token_rid ON spidx_token(rid, param)") == "rid"
    assert first_column("CREATE INDEX spidx_token_code\n    ON spidx_token ( code, type, param )") == "code"
    assert first_column("CREATE UNIQUE INDEX x ON public.spidx_date USING btree (RID, lo)") == "rid"
    assert first_column("CREATE INDEX spidx_uri_uri ON public.spidx_uri USING btree (uri)") == "uri"
    assert first_column("CREATE INDEX broken") is None
    assert first_column("CREATE INDEX x ON t ()") is None


def test_rows_gathered_before_a_bulk_write_of_the_same_resource_are_replaced(store: Store) -> None:
    registry = load_registry()
    placeholder = store.dialect.placeholder  # type: ignore[attr-defined]
    document = stamped(_patient("Bulk"), "p1", 1, format_instant(now()))
    bulk = NewVersion(
        "Patient",
        "p1",
        "PUT",
        pack(orjson.dumps(document)),
        document["meta"]["lastUpdated"],
        Indexer(registry).statements(0, document, placeholder),
    )

    def work(tx: Any) -> None:
        tx.create("Patient", "p1", _patient("Gathered"))  # PostgreSQL holds these rows until it sends them
        tx.write_many([bulk])  # a new version of p1: its rows replace the first version's

    store.transact(work)
    with store._reader() as conn:  # type: ignore[attr-defined]
        _assert_rows_of_current_version(conn, store, "p1", version=2)
