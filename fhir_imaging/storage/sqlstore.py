"""What SQLite and PostgreSQL share: the reads, the versioned writes, index maintenance and the migrations, written
once over a DB-API connection (``conn.execute(sql, params)`` returning a cursor) and a ``Dialect``.

Every unit of work runs on one explicit connection: ``SqlReader`` (``Store.reading``) reads on it, ``SqlTransaction``
(``Store.transact``) also writes on it, and each write replaces the resource's search index rows in the same
transaction (``Indexer``, built from the registry the store was opened with). Backends provide the connections:
``_reader()`` (a context manager yielding a connection for reads) and ``transact``. Versions are assigned under a
lock on the current row (``Dialect.lock_current_row``; SQLite serialises writers instead), so they are gap-free and
an ``If-Match`` race has exactly one winner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import orjson

from fhir_imaging.fhir.outcome import PreconditionFailed
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.fhir.resource import format_instant, now, stamped
from fhir_imaging.search.index import INDEX_TABLES, Indexer, Prepared, delete_statements, drop_id_hashes
from fhir_imaging.storage.base import HistoryQuery, Version, WriteResult
from fhir_imaging.storage.bodies import pack, unpack
from fhir_imaging.storage.bulk import NewVersion, build_deferred, defer_indexes, write_versions
from fhir_imaging.storage.dialect import Dialect
from fhir_imaging.storage.history import VERSION_COLUMNS, VERSIONS, append_statement, read_history, to_version
from fhir_imaging.storage.schema import MIGRATIONS, SCHEMA_VERSION, statements

T = TypeVar("T")
REINDEX_BATCH = 500
CURRENT_COLUMNS = "type, id, version, last_updated, CASE deleted WHEN 1 THEN 'DELETE' ELSE '' END, body, 0, 0"
READ_CURRENT = f"SELECT {CURRENT_COLUMNS} FROM resource WHERE type = ? AND id = ?"
READ_VERSION = f"SELECT {VERSION_COLUMNS} FROM {VERSIONS} WHERE h.type = ? AND h.id = ? AND h.version = ?"
COUNT_VERSIONS = "SELECT count(*) FROM resource_history WHERE type = ? AND id = ?"


# -- the reads, each over an explicit connection ---------------------------------------------------------------------


def read_current(conn: Any, dialect: Dialect, resource_type: str, resource_id: str) -> Version | None:
    row = conn.execute(dialect.sql(READ_CURRENT), (resource_type, resource_id)).fetchone()
    return to_version(row) if row is not None else None


def read_version(conn: Any, dialect: Dialect, resource_type: str, resource_id: str, version: int) -> Version | None:
    row = conn.execute(dialect.sql(READ_VERSION), (resource_type, resource_id, version)).fetchone()
    return to_version(row) if row is not None else None


def count_versions(conn: Any, dialect: Dialect, resource_type: str, resource_id: str) -> int:
    return int(conn.execute(dialect.sql(COUNT_VERSIONS), (resource_type, resource_id)).fetchone()[0])


class SchemaBehind(RuntimeError):
    """The database's schema is older than this server's and the store was opened without migrating."""


class SqlStore:
    """The shared part of a SQL backend; ``SqlReader`` / ``SqlTransaction`` do the work on one connection."""

    dialect: Dialect
    indexer: Indexer
    reads_inline = False  # point reads cheap enough to run on the event loop (see api.context.read_quickly)
    schema_found = 0  # the schema version the database had when the store was opened

    def __init__(self, registry: Registry) -> None:
        self.indexer = Indexer(registry)

    def _open_schema(self, migrate: bool) -> None:
        """Migrate the schema (``_migrate``, under the backend's lock), or, without ``migrate``, refuse a database
        whose schema is behind this server's (``SchemaBehind``); a newer one is fine (a rolling upgrade)."""
        try:
            if migrate:
                self.transact(self._migrate)
                return
            self.schema_found = self.reading(lambda reader: schema_version(reader.conn, self.dialect))
        except BaseException:
            self.close()
            raise
        if self.schema_found < SCHEMA_VERSION:
            self.close()
            raise SchemaBehind(
                f"the database schema is at version {self.schema_found} and this server needs {SCHEMA_VERSION}; "
                "run `fhir-imaging migrate` with the same --database first (serve was started with --no-migrate)"
            )

    def _migrate(self, tx: SqlTransaction) -> None:
        self.schema_found = self._apply_migrations(tx.conn)
        build_deferred(tx.conn, self.dialect)  # the indexes of a load into an empty database that was killed

    def defer_indexes(self) -> bool:
        """For a load into an empty database: its value-keyed indexes are built after it (``build_indexes``) rather
        than inserted into row by row (storage/bulk.py ``defer_indexes``); whether they are."""
        return self.transact(lambda tx: defer_indexes(tx.conn, self.dialect))

    def build_indexes(self) -> bool:
        """Build the indexes ``defer_indexes`` left out, in one transaction (nothing when none are)."""
        return self.transact(lambda tx: build_deferred(tx.conn, self.dialect))

    def _reader(self) -> AbstractContextManager[Any]:
        """A connection for one unit of reads (returned to the backend's pool afterwards)."""
        raise NotImplementedError

    async def start(self) -> None:
        """What the store keeps on the server's event loop, started once the loop runs (PostgreSQL: the pool of
        point reads); nothing here."""

    async def stop(self) -> None:
        """Undo ``start``, before ``close``."""

    async def read_async(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version, as ``reading(… read …, replica=True)`` gives it, awaited on the event loop: run
        there when the store's reads are quick enough (``reads_inline``), else in a worker thread."""
        if self.reads_inline:
            return self.read(resource_type, resource_id)
        return await asyncio.to_thread(self.reading, lambda reader: reader.read(resource_type, resource_id), True)

    def transact(self, work: Callable[[SqlTransaction], T]) -> T:
        raise NotImplementedError

    def run_query(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one search statement on ``conn`` (backends bound it in time)."""
        rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
        return rows

    def reading(self, work: Callable[[SqlReader], T], replica: bool = False) -> T:
        """``work`` on one reader connection (``replica``: a read replica may serve it, PostgreSQL only)."""
        with self._reader() as conn:
            return work(SqlReader(self, conn))

    def replica_states(self) -> list[dict[str, Any]]:
        return []

    def await_replica(self, fence: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a read replica that has replayed ``fence`` (PostgreSQL with replicas;
        False at once without any): for background reads that would rather wait than load the primary."""
        return False

    # -- one-step units of work ------------------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        with self._reader() as conn:
            return read_current(conn, self.dialect, resource_type, resource_id)

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        with self._reader() as conn:
            return read_version(conn, self.dialect, resource_type, resource_id, version)

    def count_versions(self, resource_type: str, resource_id: str) -> int:
        with self._reader() as conn:
            return count_versions(conn, self.dialect, resource_type, resource_id)

    def history(self, query: HistoryQuery) -> tuple[list[Version], tuple[int, int] | None]:
        with self._reader() as conn:
            return read_history(conn, self.dialect, query)

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._reader() as conn:
            return self.run_query(conn, sql, params)

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult:
        prepared = self.prepare(resource_type, resource_id, resource)
        result: WriteResult = self.transact(lambda tx: tx.create(resource_type, resource_id, resource, prepared))
        return result

    def prepare(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> Prepared:
        """The pure work of writing ``resource`` as ``resource_id`` (its index rows), done before the write's
        transaction, outside the write lock; pass it to ``create`` / ``update`` of the same id and content."""
        return self.indexer.prepare(resource_id, resource)

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult:
        prepared = self.prepare(resource_type, resource_id, resource)
        result: WriteResult = self.transact(
            lambda tx: tx.update(resource_type, resource_id, resource, if_match, prepared)
        )
        return result

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        deleted: Version | None = self.transact(lambda tx: tx.delete(resource_type, resource_id, if_match))
        return deleted

    # -- schema and index ------------------------------------------------------------------------------------------

    def _apply_migrations(self, conn: Any) -> int:
        """Bring the schema up to date, inside the caller's transaction (which keeps other processes out); the
        version it was at."""
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current: int = row[0] or 0
        for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            for statement in statements(migration, conn):
                conn.execute(self.dialect.ddl(statement))
            conn.execute(self.dialect.sql("INSERT INTO schema_version (version) VALUES (?)"), (number,))
        return current

    def close(self) -> None:
        raise NotImplementedError

    def ping(self, timeout: float) -> None:
        with self._reader() as conn:
            conn.execute("SELECT count(*) FROM schema_version").fetchone()

    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild every search index row from the stored current versions, in one transaction; the count."""
        return self.transact(lambda tx: tx.reindex(progress))


def schema_version(conn: Any, dialect: Dialect) -> int:
    """The schema version of the database on ``conn`` (0: none yet)."""
    if conn.execute(dialect.sql(dialect.table_exists), ("schema_version",)).fetchone() is None:
        return 0
    return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


class SqlReader:
    """The reads of one unit of work, on its connection."""

    def __init__(self, store: SqlStore, conn: Any) -> None:
        self.conn = conn
        self.dialect = store.dialect
        self._run_query = store.run_query

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        return read_current(self.conn, self.dialect, resource_type, resource_id)

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        return read_version(self.conn, self.dialect, resource_type, resource_id, version)

    def count_versions(self, resource_type: str, resource_id: str) -> int:
        return count_versions(self.conn, self.dialect, resource_type, resource_id)

    def history(self, query: HistoryQuery) -> tuple[list[Version], tuple[int, int] | None]:
        return read_history(self.conn, self.dialect, query)

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._run_query(self.conn, sql, params)


class SqlTransaction(SqlReader):
    """The reads and writes of one open write transaction, on its connection."""

    def __init__(self, store: SqlStore, conn: Any) -> None:
        super().__init__(store, conn)
        self.indexer = store.indexer

    def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.conn.execute(self.dialect.sql(sql), params)

    # -- search index rows: replaced inside each write ---------------------------------------------------------------

    def _index(self, rid: int, resource: dict[str, Any], fresh: bool, prepared: Prepared | None = None) -> None:
        """Replace the resource's index rows (``fresh``: a new rid, which has none yet; ``prepared``: most of them
        computed before the transaction, for this content)."""
        if not fresh:
            self._unindex(rid, resource["resourceType"])
        cursor = self.conn.cursor()
        for statement, rows in self.indexer.statements(rid, resource, self.dialect.placeholder, prepared):
            cursor.executemany(statement, rows)

    def _unindex(self, rid: int, resource_type: str) -> None:
        """A deleted resource has no index rows (in the composite tables only if its type has composites)."""
        composites = bool(self.indexer.composites(resource_type))
        if self.indexer.has_ids(resource_type):
            drop_id_hashes(self.conn, (rid,), self.dialect.placeholder)
        for statement in delete_statements(self.dialect.placeholder, composites):
            self.conn.execute(statement, (rid,))

    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild every index row from the current versions; the number of resources indexed."""
        for table in INDEX_TABLES:
            self.conn.execute(f"DELETE FROM {table}")
        count, last = 0, 0
        select = self.dialect.sql("SELECT rid, body FROM resource WHERE deleted = 0 AND rid > ? ORDER BY rid LIMIT ?")
        while batch := self.conn.execute(select, (last, REINDEX_BATCH)).fetchall():
            for rid, body in batch:
                self._index(rid, orjson.loads(unpack(body)), fresh=True)
            count += len(batch)
            last = batch[-1][0]
            if progress:
                progress(count)
        self.conn.execute("ANALYZE")
        return count

    # -- versioned writes --------------------------------------------------------------------------------------------

    def _current(self, resource_type: str, resource_id: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._execute(
            "SELECT rid, version, deleted FROM resource WHERE type = ? AND id = ?" + self.dialect.lock_current_row,
            (resource_type, resource_id),
        ).fetchone()
        return row

    def lock(self, key: str) -> None:
        """Hold a lock on ``key`` until this transaction ends (conditional interactions on the same criteria)."""
        if self.dialect.advisory_lock is not None:
            self._execute(self.dialect.advisory_lock, (key,))

    def create(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], prepared: Prepared | None = None
    ) -> WriteResult:
        return self._put(resource_type, resource_id, resource, None, "POST", prepared)

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None = None,
        prepared: Prepared | None = None,
    ) -> WriteResult:
        return self._put(resource_type, resource_id, resource, if_match, "PUT", prepared)

    def write_many(self, versions: Sequence[NewVersion], fresh_only: bool = False) -> None:
        """Many prepared versions at once (distinct ids; ``fhir-imaging load``): what ``update`` (or ``create``)
        would make of each, in one ``executemany`` per table (storage/bulk.py); ``fresh_only``: ``NotFresh`` (and
        nothing written) when one of the ids exists."""
        write_versions(self.conn, self.dialect, versions, fresh_only)

    def execute(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._execute(sql, tuple(params)).rowcount)

    # -- the token endpoint's state (auth/backend.py) ---------------------------------------------------------------

    def server_key(self, make: Callable[[], bytes]) -> bytes:
        select = self.dialect.sql("SELECT pem FROM auth_key WHERE name = ?")
        row = self.conn.execute(select, ("access-token",)).fetchone()
        if row is None:
            self._execute(
                "INSERT INTO auth_key (name, pem, created) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                ("access-token", make().decode("ascii"), format_instant(now())),
            )
            row = self.conn.execute(select, ("access-token",)).fetchone()
        return str(row[0]).encode("ascii")

    def spend_assertion(self, client_id: str, jti: str, expires: float) -> bool:
        self._execute("DELETE FROM auth_assertion WHERE expires < ?", (time.time(),))
        inserted = self._execute(
            "INSERT INTO auth_assertion (client_id, jti, expires) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (client_id, jti, expires),
        )
        return bool(inserted.rowcount == 1)

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        current = self._current(resource_type, resource_id)
        check_if_match(if_match, current[1] if current else None, resource_type, resource_id)
        if current is None or current[2]:
            return None
        rid, version = current[0], current[1] + 1
        last_updated = format_instant(now())
        previous_tx = self._supersede(rid, resource_type, resource_id, current[1])
        self._execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 1, body = NULL WHERE rid = ?",
            (version, last_updated, rid),
        )
        seq, tx = self._append_history(rid, resource_type, resource_id, version, last_updated, "DELETE", previous_tx)
        self._unindex(rid, resource_type)
        return Version(resource_type, resource_id, version, last_updated, "DELETE", None, seq, tx)

    def _put(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None,
        method: str,
        prepared: Prepared | None = None,
    ) -> WriteResult:
        prepared = self.indexer.usable(prepared, resource_id, resource)
        current = self._current(resource_type, resource_id)
        if current is None and if_match is None:
            last_updated = format_instant(now())
            document = stamped(resource, resource_id, 1, last_updated)
            body = orjson.dumps(document)
            inserted = self._execute(
                "INSERT INTO resource (type, id, version, last_updated, deleted, body) VALUES (?, ?, 1, ?, 0, ?) "
                "ON CONFLICT (type, id) DO NOTHING RETURNING rid",
                (resource_type, resource_id, last_updated, pack(body)),
            ).fetchone()
            if inserted is not None:
                return self._written(inserted[0], document, 1, last_updated, method, body, True, None, prepared)
            current = self._current(resource_type, resource_id)  # another transaction created it meanwhile
        check_if_match(if_match, current[1] if current else None, resource_type, resource_id)
        assert current is not None
        rid, version, created = current[0], current[1] + 1, bool(current[2])
        last_updated = format_instant(now())
        document = stamped(resource, resource_id, version, last_updated)
        body = orjson.dumps(document)
        previous_tx = self._supersede(rid, resource_type, resource_id, current[1])
        self._execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, body = ? WHERE rid = ?",
            (version, last_updated, pack(body), rid),
        )
        return self._written(rid, document, version, last_updated, method, body, created, previous_tx, prepared)

    def _written(
        self,
        rid: int,
        document: dict[str, Any],
        version: int,
        last_updated: str,
        method: str,
        body: bytes,
        created: bool,
        previous_tx: int | None,
        prepared: Prepared | None,
    ) -> WriteResult:
        """The history row and index rows of a written version (``previous_tx`` None: a new resource's first)."""
        resource_type, resource_id = document["resourceType"], document["id"]
        seq, tx = self._append_history(rid, resource_type, resource_id, version, last_updated, method, previous_tx)
        self._index(rid, document, previous_tx is None, prepared)
        return WriteResult(Version(resource_type, resource_id, version, last_updated, method, body, seq, tx), created)

    def _supersede(self, rid: int, resource_type: str, resource_id: str, version: int) -> int:
        """Before ``resource`` takes a newer version: copy the body of ``version`` (its current one) into its history
        row, which held NULL while it was current. (Histories written before the body was stored once already hold
        it: the copy is the same bytes.) Returns that version's ``tx``, which the newer one's must not be below."""
        row = self._execute(
            "UPDATE resource_history SET body = (SELECT body FROM resource WHERE rid = ?) "
            "WHERE type = ? AND id = ? AND version = ? RETURNING tx",
            (rid, resource_type, resource_id, version),
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def _append_history(
        self,
        rid: int,
        resource_type: str,
        resource_id: str,
        version: int,
        last_updated: str,
        method: str,
        previous_tx: int | None,
    ) -> tuple[int, int]:
        """The history row of a new version (its body stays NULL while it is current); its (seq, tx)."""
        row = self.conn.execute(
            append_statement(self.dialect),
            (rid, resource_type, resource_id, version, last_updated, method, None, previous_tx or 0),
        ).fetchone()
        return int(row[0]), int(row[1])


def check_if_match(if_match: int | None, current: int | None, resource_type: str, resource_id: str) -> None:
    if if_match is not None and if_match != current:
        found = f"version {current}" if current is not None else "no such resource"
        raise PreconditionFailed(
            f"If-Match asked for version {if_match} of {resource_type}/{resource_id}, but the server has {found}",
            "If-Match",
        )
