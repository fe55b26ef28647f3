"""A database made by an older release upgrades in place when the server opens it (both backends)."""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.search.composite import COMPOSITE_TABLES
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.index import ID_HASH_TABLE, ID_RID_TABLE, ID_TABLE
from fhir_imaging.search.query import parse_search
from fhir_imaging.storage import open_store
from fhir_imaging.storage.dialect import POSTGRES
from fhir_imaging.storage.schema import MIGRATIONS, SCHEMA_VERSION, composite_migration, statements
from fhir_imaging.storage.sqlite import path_from_url


def _make_old_database(database: str, versions: int) -> None:
    """The schema as the first ``versions`` migrations left it, with one resource in it."""
    made = [statement for migration in MIGRATIONS[:versions] for statement in statements(migration)]
    rows = [
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        *(f"INSERT INTO schema_version (version) VALUES ({number})" for number in range(1, versions + 1)),
    ]
    insert = (
        "INSERT INTO resource (type, id, version, last_updated, deleted, body) VALUES "
        "('Patient', 'old', 1, '2020-01-01T00:00:00.000Z', 0, ?)"
    )
    body = b'{"resourceType":"Patient","id":"old","meta":{"versionId":"1","lastUpdated":"2020-01-01T00:00:00.000Z"}}'
    if database.startswith("sqlite"):
        with sqlite3.connect(path_from_url(database)) as conn:
            for statement in [*made, *rows]:
                conn.execute(statement)
            conn.execute(insert, (body,))
    else:
        import psycopg

        with psycopg.connect(database) as conn:
            for statement in made:
                conn.execute(POSTGRES.ddl(statement))
            for statement in rows:
                conn.execute(statement)
            conn.execute(insert.replace("?", "%s"), (body,))


def test_an_older_schema_is_migrated_and_keeps_its_data(database: str) -> None:
    _make_old_database(database, 2)
    store = open_store(Settings(database=database), load_registry())
    try:
        assert store.read("Patient", "old") is not None
        version = store.query("SELECT max(version) FROM schema_version", [])[0][0]
        assert version == SCHEMA_VERSION
        assert store.create("Patient", "new", {"resourceType": "Patient", "gender": "male"}).created
    finally:
        store.close()
    again = open_store(Settings(database=database), load_registry())  # opening a current database changes nothing
    try:
        assert again.query("SELECT count(*) FROM schema_version", [])[0][0] == SCHEMA_VERSION
    finally:
        again.close()


def test_the_composite_migration_fills_the_rows_of_the_resources_already_stored(database: str) -> None:
    """A database from before the composite migration, holding Observations (one deleted): opening it makes the
    composite tables and their rows, as a write would have (no ``reindex`` needed)."""
    store = open_store(Settings(database=database), load_registry())

    def component(code: str, value: float) -> dict[str, object]:
        return {"code": {"coding": [{"code": code}]}, "valueQuantity": {"value": value, "unit": "mmHg"}}

    def observation(resource_id: str, systolic: float) -> dict[str, object]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"code": "85354-9"}]},
            "component": [component("8480-6", systolic), component("8462-4", 80)],
        }

    try:
        for resource_id, systolic in (("a", 150), ("b", 90), ("c", 160)):
            store.update("Observation", resource_id, observation(resource_id, systolic))
        store.delete("Observation", "c")
        store.update("Patient", "p", {"resourceType": "Patient"})
        expected = store.query("SELECT * FROM spidx_composite_quantity ORDER BY rid, param, element, component", [])
        assert len(expected) == 4 * 2  # two Observations, two components, two parameters (component-…, combo-…)

        def back_to_7(tx: Any) -> None:
            for table in COMPOSITE_TABLES.values():
                tx.conn.execute(f"DROP TABLE {table}")
            # the UID tables of migration 9 back as migration 7 made them (no ImagingStudy here: empty)
            for table in (ID_TABLE, ID_HASH_TABLE, ID_RID_TABLE):
                tx.conn.execute(f"DROP TABLE IF EXISTS {table}")
            tx.conn.execute(
                f"CREATE TABLE {ID_TABLE} (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, "
                "code TEXT NOT NULL, PRIMARY KEY (rid, param, code))"
                + (" WITHOUT ROWID" if tx.dialect.name == "sqlite" else "")
            )
            tx.conn.execute(f"CREATE INDEX {ID_TABLE}_code ON {ID_TABLE} (type, param, code, rid)")
            number = MIGRATIONS.index(composite_migration) + 1
            tx.conn.execute(f"DELETE FROM schema_version WHERE version >= {number}")

        store.transact(back_to_7)
    finally:
        store.close()
    store = open_store(Settings(database=database), load_registry())  # migrates
    try:
        assert store.query("SELECT max(version) FROM schema_version", [])[0][0] == SCHEMA_VERSION
        found = store.query("SELECT * FROM spidx_composite_quantity ORDER BY rid, param, element, component", [])
        assert found == expected
        request = parse_search(load_registry(), ("Observation",), [("component-code-value-quantity", "8480-6$gt100")])
        assert [hit.id for hit in run_search(store, request, ("",)).matches] == ["a"]
    finally:
        store.close()
