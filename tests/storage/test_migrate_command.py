"""``fhir-imaging migrate`` applies the migrations and exits, once however many run at once; ``serve --no-migrate``
never changes the schema and refuses a database whose schema is behind (both backends)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest

from fhir_imaging.cli import main
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.schema import SCHEMA_VERSION
from fhir_imaging.storage.sqlite import path_from_url
from fhir_imaging.storage.sqlstore import SchemaBehind
from tests.storage.test_migrations import _make_old_database


def _versions(database: str) -> list[int]:
    select = "SELECT version FROM schema_version ORDER BY version"
    if database.startswith("sqlite"):
        with closing(sqlite3.connect(path_from_url(database))) as conn:
            return [row[0] for row in conn.execute(select)]
    import psycopg

    with psycopg.connect(database) as pg:
        return [row[0] for row in pg.execute(select)]


def _migrate_process(database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_imaging", "migrate", "--database", database],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_the_migrations_once_even_when_two_run_at_once(database: str) -> None:
    _make_old_database(database, 2)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(_migrate_process, [database, database])
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    messages = first.stderr + second.stderr
    assert f"from schema version 2 to {SCHEMA_VERSION}" in messages
    assert _versions(database) == list(range(1, SCHEMA_VERSION + 1))
    again = _migrate_process(database)
    assert again.returncode == 0 and f"up to date (version {SCHEMA_VERSION})" in again.stderr
    assert _versions(database) == list(range(1, SCHEMA_VERSION + 1))


def test_no_migrate_refuses_a_schema_behind_and_changes_nothing(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_old_database(database, 2)
    with pytest.raises(SchemaBehind, match=f"version 2 and this server needs {SCHEMA_VERSION}"):
        open_store(Settings(database=database, no_migrate=True), load_registry())
    assert main(["serve", "--no-migrate", "--database", database, "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "fhir-imaging migrate" in error and "--no-migrate" in error
    assert _versions(database) == [1, 2]
    assert main(["migrate", "--database", database]) == 0
    store = open_store(Settings(database=database, no_migrate=True), load_registry())
    try:
        assert store.create("Patient", "p", {"resourceType": "Patient"}).created
    finally:
        store.close()


def test_no_migrate_refuses_an_empty_database(database: str) -> None:
    with pytest.raises(SchemaBehind, match="at version 0"):
        open_store(Settings(database=database, no_migrate=True), load_registry())


def test_migrate_on_an_unreachable_database_exits_2() -> None:
    result = _migrate_process("postgresql://nobody:secret@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "cannot open the database" in result.stderr and "secret" not in result.stderr
