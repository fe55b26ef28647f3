"""A database made by an older release upgrades in place when the server opens it (both backends)."""

from __future__ import annotations

import sqlite3

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.dialect import POSTGRES
from fhir_imaging.storage.schema import MIGRATIONS, SCHEMA_VERSION, statements
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
