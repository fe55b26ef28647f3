"""``fhir-imaging load --database`` writes loose resources in bulk (fhir_imaging/bulk_load.py, storage/bulk.py): the
database it makes equals, row for row, the one the API path makes of the same files (resources, history, every index
table), on both backends; refusals are the API's; loading again makes the next versions."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import generate_corpus
from fhir_imaging.cli import main
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.resource import stamped
from fhir_imaging.loader import Loader, Summary
from fhir_imaging.search.index import ID_HASH_TABLE, INDEX_TABLES, Indexer
from fhir_imaging.storage import open_store
from fhir_imaging.storage.bodies import pack, unpack
from fhir_imaging.storage.bulk import NewVersion, NotFresh
from tests.conftest import BACKENDS, SEED_STUDY, fresh_postgres_database

Rows = dict[str, list[tuple[Any, ...]]]


@contextmanager
def _two_databases(backend: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}", f"sqlite:///{tmp_path / 'bulk.db'}"
        return
    with fresh_postgres_database() as api, fresh_postgres_database() as bulk:
        yield api, bulk


def _corpus(path: Path) -> Path:
    """A small generated corpus, and what a real feed also holds: a line that is not JSON, a resource the
    validator refuses, a resource without id (POST), one whose id comes twice (two versions), and references the
    API resolves (a conditional one)."""
    resources: list[Any] = list(generate_corpus(12, seed=3))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    mrn = patient["identifier"][0]
    resources += [
        b"{not json",
        dict(copy.deepcopy(SEED_STUDY), id="refused", status="finished"),
        {**patient, "gender": "other"},  # the same id again: version 2
        dict(
            copy.deepcopy(SEED_STUDY),
            id="by-mrn",
            subject={"reference": f"Patient?identifier={mrn['system']}|{mrn['value']}"},
        ),
        dict(copy.deepcopy(SEED_STUDY), id="dangling", subject={"reference": "Patient?identifier=none|none"}),
    ]
    path.write_bytes(b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r) for r in resources) + b"\n")
    return path


def _load_through_api(path: Path, database: str) -> Summary:
    async def run() -> Summary:
        async with fhir_client(database=database, settings=Settings(database=database)) as client:
            return await Loader(client, batch_size=500).load([path])

    return asyncio.run(run())


def _body(stored: Any) -> Any:
    """A stored body without its ``meta.lastUpdated`` (the time of the write)."""
    if stored is None:
        return None
    document = orjson.loads(unpack(bytes(stored)))
    document["meta"].pop("lastUpdated")
    return document


def _contents(database: str) -> Rows:
    """Every resource, history and index row, with rids replaced by the resource's type and id (the times of the
    writes aside: ``meta.lastUpdated``, the ``_lastUpdated`` rows)."""
    store = open_store(Settings(database=database), load_registry())
    try:
        keys = {rid: (kind, rid_id) for rid, kind, rid_id in store.query("SELECT rid, type, id FROM resource", [])}
        out: Rows = {
            "resource": sorted(
                (kind, rid_id, version, deleted, orjson.dumps(_body(body)))
                for kind, rid_id, version, deleted, body in store.query(
                    "SELECT type, id, version, deleted, body FROM resource", []
                )
            ),
            "resource_history": sorted(
                (keys[rid], kind, rid_id, version, method, orjson.dumps(_body(body)))
                for rid, kind, rid_id, version, method, body in store.query(
                    "SELECT rid, type, id, version, method, body FROM resource_history", []
                )
            ),
        }
        for table in INDEX_TABLES:
            rows = store.query(f"SELECT * FROM {table}", [])
            if table == ID_HASH_TABLE:  # (h, rid): the rid first, as in every other table
                rows = [(rid, h) for h, rid in rows]
            out[table] = sorted(
                (keys[row[0]], *(repr(value) for value in row[1:]))
                for row in rows
                if len(row) < 3 or row[2] != "_lastUpdated"
            )
        return out
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bulk_load_makes_the_database_the_api_makes(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _corpus(tmp_path / "corpus.ndjson")
    with _two_databases(backend, tmp_path) as (api, bulk):
        for _ in range(2):  # the second load makes every resource's next version, on both paths
            summary = _load_through_api(path, api)
            assert main(["load", str(path), "--database", bulk, "--load-workers", "2", "--batch-size", "7"]) == 1
            err = capsys.readouterr().err
            assert f"loaded: {summary.loaded}" in err and f"failed: {len(summary.failed)}" in err
            for failure in summary.failed:
                assert f"{failure.source}:" in err
        assert len(summary.failed) == 3  # not JSON, refused, the conditional reference that matches nothing
        expected, found = _contents(api), _contents(bulk)
    assert found.keys() == expected.keys()
    for table, rows in expected.items():
        assert found[table] == rows, table
    assert max(row[2] for row in found["resource"]) == 4  # the patient given twice, loaded twice
    assert sum(len(rows) for table, rows in found.items() if table.startswith("spidx")) > 500


def test_a_resource_without_id_gets_one_and_refusals_name_the_resource_and_element(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "studies.ndjson"
    no_id = {k: v for k, v in SEED_STUDY.items() if k != "id"}
    lines = [no_id, dict(SEED_STUDY, id="x", status="finished"), {"resourceType": "Unknown", "id": "u"}]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    database = f"sqlite:///{tmp_path / 'bulk.db'}"
    assert main(["load", str(path), "--database", database, "--load-workers", "1"]) == 1
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "loaded: 1" in err and "failed: 2" in err
    assert f"{path}:2: 422 Unprocessable Entity: (PUT ImagingStudy/x)" in err and "ImagingStudy.status" in err
    assert f"{path}:3: 400 Bad Request: (PUT Unknown/u): 'Unknown/u' does not start with a resource type" in err
    rows = _contents(database)["resource_history"]
    assert [(row[1], row[4]) for row in rows] == [("ImagingStudy", "POST")]


def test_sqlite_relaxes_sync_during_a_bulk_load_and_syncs_at_its_end(tmp_path: Path) -> None:
    from fhir_imaging.storage.sqlite import BULK_CHECKPOINT_PAGES, SQLiteStore

    store = SQLiteStore(f"sqlite:///{tmp_path / 'sync.db'}", load_registry())
    pragma = lambda name: store._writer.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    try:
        assert (pragma("synchronous"), pragma("wal_autocheckpoint")) == (2, 1000)  # FULL
        with store.relaxed_sync():
            assert (pragma("synchronous"), pragma("wal_autocheckpoint")) == (1, BULK_CHECKPOINT_PAGES)  # NORMAL
            store.create("Patient", "p", {"resourceType": "Patient"})
            assert (tmp_path / "sync.db-wal").stat().st_size > 0
        assert (pragma("synchronous"), pragma("wal_autocheckpoint")) == (2, 1000)
        assert (tmp_path / "sync.db-wal").stat().st_size == 0  # checkpointed into the database file
    finally:
        store.close()


def _indexes(database: str) -> list[tuple[str, str]]:
    """Every index of the database with its definition, and the DDL of ``ID_HASH_TABLE`` (a deferred load rebuilds
    it), read as they are (without opening a store, which would build deferred indexes)."""
    if database.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(database.removeprefix("sqlite:///"))
        try:
            query = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' OR name = ?"
            return sorted((str(a), str(b)) for a, b in conn.execute(query, [ID_HASH_TABLE]))
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database, autocommit=True) as pg:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        return sorted((str(a), str(b)) for a, b in pg.execute(query).fetchall())


def _open_and_close(database: str) -> None:
    open_store(Settings(database=database), load_registry()).close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_load_into_an_empty_database_builds_its_indexes_at_the_end_and_makes_the_api_database(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "corpus.ndjson"
    resources: list[Any] = [*generate_corpus(12, seed=4), dict(copy.deepcopy(SEED_STUDY), id="x", status="finished")]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    with _two_databases(backend, tmp_path) as (api, bulk):
        summary = _load_through_api(path, api)
        assert main(["load", str(path), "--database", bulk, "--load-workers", "2", "--batch-size", "9"]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"loaded: {summary.loaded}" in err and "failed: 1" in err
        assert f"{path}:{len(resources)}: 422 Unprocessable Entity: (PUT ImagingStudy/x)" in err
        assert _indexes(bulk) == _indexes(api)
        expected, found = _contents(api), _contents(bulk)
    for table, rows in expected.items():
        assert found[table] == rows, table


def _version(resource: dict[str, Any]) -> NewVersion:
    registry = load_registry()
    document = stamped(resource, resource["id"], 1, "2026-12-01T00:00:00Z")
    body = pack(orjson.dumps(document))
    rows = Indexer(registry).statements(0, document, "?")
    return NewVersion(resource["resourceType"], resource["id"], "PUT", body, "2026-12-01T00:00:00Z", rows)


def test_indexes_are_deferred_only_in_an_empty_database_and_a_written_id_ends_the_deferral(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'deferred.db'}"
    _open_and_close(database)
    all_indexes = _indexes(database)
    store = open_store(Settings(database=database), load_registry())
    study = next(r for r in generate_corpus(1, seed=5) if r["resourceType"] == "ImagingStudy")
    try:
        assert store.defer_indexes()  # type: ignore[attr-defined]
        left = {name for name, _ in _indexes(database)}
        assert "spidx_token_code" not in left and "spidx_token_rid" in left  # value-keyed out, rid-keyed kept
        store.transact(lambda tx: tx.write_many([_version(study)], True))  # type: ignore[attr-defined]
        with pytest.raises(NotFresh):  # the same id again: refused while deferred, nothing written
            store.transact(lambda tx: tx.write_many([_version(study)], True))  # type: ignore[attr-defined]
        assert store.build_indexes()  # type: ignore[attr-defined]
        assert not store.build_indexes()  # type: ignore[attr-defined]
        assert not store.defer_indexes()  # type: ignore[attr-defined]  # not empty any more
        assert _indexes(database) == all_indexes
        hashes = [row for sql, rows in _version(study).index if f" {ID_HASH_TABLE} " in sql for row in rows]
        assert len(hashes) > 1
        assert store.query(f"SELECT count(*) FROM {ID_HASH_TABLE}", [])[0][0] == len(hashes)
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_load_killed_midway_keeps_its_committed_batches_whole_and_the_next_open_builds_the_indexes(
    backend: str, tmp_path: Path
) -> None:
    path = tmp_path / "corpus.ndjson"
    resources = list(generate_corpus(300, seed=6))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    with _two_databases(backend, tmp_path) as (api, bulk):
        command = [sys.executable, "-m", "fhir_imaging", "load", str(path), "--database", bulk]
        process = subprocess.Popen([*command, "--load-workers", "1", "--batch-size", "3"], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while _count(bulk) < 30 and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            process.kill()
            process.wait()
        loaded = _count(bulk)
        assert 30 <= loaded < len(resources)
        _open_and_close(api)
        assert _indexes(bulk) != _indexes(api)  # the load was killed before building its indexes
        _open_and_close(bulk)
        assert _indexes(bulk) == _indexes(api)  # the next open (which migrates) built them
        found = _contents(bulk)
        ids = {(row[0], row[1]) for row in found["resource"]}
        assert len(ids) == loaded
        subset = tmp_path / "subset.ndjson"
        subset.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources if (r["resourceType"], r["id"]) in ids))
        _load_through_api(subset, api)
        expected = _contents(api)
    for table, rows in expected.items():
        assert found[table] == rows, table


def _count(database: str) -> int:
    """The resources in ``database`` (read without migrating or building anything: 0 before it exists)."""
    if database.startswith("sqlite"):
        import sqlite3

        file = Path(database.removeprefix("sqlite:///"))
        if not file.exists():
            return 0
        conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM resource").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM resource").fetchone()[0])
        except psycopg.errors.UndefinedTable:
            return 0
