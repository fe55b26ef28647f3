"""PostgreSQL backend (psycopg 3 with a connection pool): several server processes or machines share one database.

The schema, the statements and the search compiler are SQLite's, through the dialect table (``dialect.py``).
Resources are stored as the bytes that were sent (``bytea``), so reads serve them without re-serialising (a
``jsonb`` column would reorder their keys). Versions are assigned under a row lock (``SELECT … FOR UPDATE``), a race
to create one id is settled by the unique key (``ON CONFLICT``), and migrations run under an advisory lock, so
processes starting together migrate once. While the database cannot be reached, requests answer 503; the pool
reconnects by itself when it is back.

Round trips are what a PostgreSQL store spends, so it spends few: a write transaction sends its search index rows by
``COPY``, one per index table (``PgTransaction``), a create is one statement with its history row, a removal of a
resource's index rows one statement; pooled connections run in autocommit and are checked only after a second idle
(storage/pgpool.py), so a point read is one round trip, its statement prepared on the server from its fifth run
(psycopg's ``prepare_threshold``) — a read by id's from its first, its row in binary (``PgReader``). Bodies, compressed
by the server already, stay in their row up to a page and are not compressed again (schema migration 10).

A server's reads by id do not hop to a thread: ``start`` opens, on the server's event loop, a second pool of
asynchronous connections (``AsyncConnectionPool``, a quarter of ``pool_size``: ``point_reads_size``), and
``read_async`` waits for its one round trip on the loop: the hop to a worker thread and back cost more CPU than the
read (0.48 against 0.28 ms of server CPU a read; bench/README.md, "Reads by id on PostgreSQL without a thread").
So do a replica's (storage/replicas.py ``point_reads``). Everything else (searches, history, writes) runs in worker
threads on synchronous pools.

With read replicas (``--database-replica``), a unit of reads the service marks ``replica=True`` runs on a usable
replica that has replayed the session's fence (storage/routing.py, storage/replicas.py), else on the primary; one
that fails there because the replica went away runs again on the primary. Every commit notes the primary's LSN in
the session, for the client's consistency token.

Behind a pooler in transaction mode (PgBouncer ``pool_mode = transaction``, ``transaction_pooler``) a connection is
the server's only for one transaction at a time, so nothing may live in the session: statements are never prepared
on the server (psycopg's ``prepare_threshold=None``; PgBouncer before 1.21 cannot track them) and the statement
timeout, otherwise a connection option (which PgBouncer refuses), is set at the start of every transaction
(``SET LOCAL``). Locks are transaction-scoped already (``pg_advisory_xact_lock``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from fhir_imaging.fhir.outcome import ServiceUnavailable, TooCostly
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.fhir.resource import format_instant, now, stamped
from fhir_imaging.logs import redact_url
from fhir_imaging.search.index import ID_HASH_TABLE, INDEX_TABLES, PLAIN_TABLES, Prepared, drop_id_hashes
from fhir_imaging.storage import pgstats
from fhir_imaging.storage.base import Version, WriteResult
from fhir_imaging.storage.bodies import pack, unpack
from fhir_imaging.storage.bulk import NewVersion, copy_statement
from fhir_imaging.storage.dialect import POSTGRES
from fhir_imaging.storage.pgpool import AsyncIdleCheck, IdleCheck
from fhir_imaging.storage.replicas import Replica, ReplicaSet, primary_lsn
from fhir_imaging.storage.routing import SESSION
from fhir_imaging.storage.schema import SCHEMA_VERSION
from fhir_imaging.storage.sqlstore import SqlReader, SqlStore, SqlTransaction

T = TypeVar("T")
log = logging.getLogger("fhir_imaging.replicas")
MIGRATION_LOCK = 7_340_147  # pg_advisory_xact_lock key for schema migrations
CONNECT_TIMEOUT_S = 5
# A pool's failed (re)connection is retried on psycopg_pool's backoff (1, 2 … s) for this long, then given up; the
# next request that finds no connection makes a new attempt. (psycopg_pool's default, 5 minutes of a doubling
# backoff, left a pool that had lost its connections waiting for the next step of it long after the database was
# back, however many requests waited.)
RECONNECT_TIMEOUT_S = 5.0
COPY_ROWS = 50_000  # index rows a write transaction gathers at most before it sends them (PgTransaction)


def point_reads_size(pool_size: int) -> int:
    """The connections of ``pool_size`` a server keeps for reads by id on the event loop: a quarter, at least one (one
    round trip each, so a few serve many concurrent requests: 4 connections gave 95 % of the reads/s of 10 for 16
    concurrent readers, bench/README.md); the rest (at least one) serve the worker threads. A store that is not
    serving (``load``, ``migrate``: no ``start``) gives them all to its threads."""
    return max(1, pool_size // 4)


class DatabaseUnreachable(RuntimeError):
    """The database could not be reached when the store was opened."""


class PostgresStore(SqlStore):
    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        registry: Registry,
        pool_size: int = 10,
        statement_timeout: float = 30.0,
        replicas: Sequence[str] = (),
        replica_max_lag: float = 5.0,
        replica_check_interval: float = 1.0,
        migrate: bool = True,
        transaction_pooler: bool = False,
    ) -> None:
        super().__init__(registry)
        self.url = url
        self.statement_timeout = statement_timeout
        self.primary_reads = 0  # units of reads the primary served (the replicas count theirs: ``replicas``)
        self.replicas: ReplicaSet | None = None  # started once the schema is migrated
        timeout_ms = max(1, round(statement_timeout * 1000))
        # Every statement is bounded in time (a search's, and any other); migrations lift it (_migrate).
        options = f"-c statement_timeout={timeout_ms}"
        self._set_timeout = f"SET LOCAL statement_timeout = {timeout_ms}" if transaction_pooler else None
        # a point read's statement is prepared on the server at once (not from its fifth run), except behind a
        # pooler, where nothing may be prepared (None: the connection's prepare_threshold decides, and it is off)
        self.prepare_reads: bool | None = None if transaction_pooler else True
        kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if transaction_pooler:
            kwargs["prepare_threshold"] = None
        else:  # a unit of reads runs its statements without BEGIN and ROLLBACK (writes open a transaction)
            kwargs["options"] = options
            kwargs["autocommit"] = True
        self._connection_kwargs = kwargs
        self._pool_size = pool_size
        self._point_reads_size = point_reads_size(pool_size)
        self._point_reads: AsyncConnectionPool | None = None  # opened on the server's event loop by ``start``
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,  # until ``start`` gives a part of it to the pool of point reads
            timeout=CONNECT_TIMEOUT_S,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            kwargs=kwargs,
            check=IdleCheck(),
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            self._pool.close()
            raise DatabaseUnreachable(f"PostgreSQL at {redact_url(url)} cannot be reached") from exc
        self._open_schema(migrate)
        if replicas:  # replicas are reached directly (not through the pooler), each with the statement timeout
            self.replicas = ReplicaSet(
                replicas,
                self._primary_lsn,
                replica_max_lag,
                replica_check_interval,
                pool_size,
                options,
                self._point_reads_size,
            )

    def _primary_lsn(self) -> int:
        with self._pool.connection() as conn:
            return primary_lsn(conn)

    def _migrate(self, tx: SqlTransaction) -> None:
        """The migrations, then the planner's extended statistics (storage/pgstats.py) where missing. A database
        that had rows is analysed when a migration ran (it may have filled tables) or statistics were created."""
        tx.conn.execute("SET LOCAL statement_timeout = 0")  # building an index on a large table takes its time
        tx.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        super()._migrate(tx)
        created = pgstats.ensure(tx.conn)
        if self.schema_found and (created or self.schema_found < SCHEMA_VERSION):
            tx.conn.execute("ANALYZE")

    def analyze(self) -> None:
        """``ANALYZE`` the whole database (after a bulk load: the planner's statistics, extended ones included,
        count only once gathered; autovacuum would gather them later, after the first searches had been planned
        blind), without the statement timeout."""

        def run(tx: SqlTransaction) -> None:
            tx.conn.execute("SET LOCAL statement_timeout = 0")
            tx.conn.execute("ANALYZE")

        self.transact(run)

    def run_query(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A search statement, planned for its values every time: never prepared on the server (psycopg prepares a
        statement from its fifth run on a connection), whose generic plan, made for any value, would serve
        ``status=available`` (most studies) with the plan of a rare code (list every match, then sort them)."""
        rows: list[tuple[Any, ...]] = conn.execute(sql, params, prepare=False).fetchall()
        return rows

    def ping(self, timeout: float) -> None:
        """``SELECT 1`` on a pooled connection, waiting at most ``timeout`` seconds for one (the pool checks it
        before handing it out) and as long for the answer."""
        with self._pool.connection(timeout=timeout) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        if self.replicas is not None:
            self.replicas.close()
        self._pool.close()

    async def start(self) -> None:
        """Open the pool of point reads on the running event loop (its connections are made in the background)."""
        if self._point_reads is None:
            pool: AsyncConnectionPool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._point_reads_size,
                timeout=CONNECT_TIMEOUT_S,
                reconnect_timeout=RECONNECT_TIMEOUT_S,
                kwargs=self._connection_kwargs,
                check=AsyncIdleCheck(),
                open=False,
            )
            await pool.open(wait=False)
            self._point_reads = pool
            self._pool.resize(1, max(1, self._pool_size - self._point_reads_size))

    async def stop(self) -> None:
        if self.replicas is not None:
            await self.replicas.close_point_reads()
        if self._point_reads is not None:
            pool, self._point_reads = self._point_reads, None
            await pool.close()
            self._pool.resize(1, self._pool_size)

    async def read_async(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version, as ``reading(… read …, replica=True)`` gives it, awaited on the event loop: on a
        usable replica that has replayed the session's fence, over its pool of reads by id; else (or when that
        replica fails) on the primary, over the pool of point reads (in a worker thread before ``start``)."""
        pool = self._point_reads
        if pool is None:
            return await asyncio.to_thread(self.reading, lambda reader: reader.read(resource_type, resource_id), True)
        if self.replicas is not None:
            session = SESSION.get()
            chosen = self.replicas.choose(session.fence if session is not None else 0)
            if chosen is not None:
                try:
                    with _too_costly():
                        row = await self._read_by_id(
                            await self.replicas.point_reads(chosen), resource_type, resource_id
                        )
                except (psycopg.OperationalError, PoolTimeout) as exc:
                    self._replica_failed(chosen, exc)  # the primary answers instead
                else:
                    chosen.reads += 1
                    return _current(resource_type, resource_id, row)
        with _unavailable_as_503():
            self.primary_reads += 1
            row = await self._read_by_id(pool, resource_type, resource_id)
        return _current(resource_type, resource_id, row)

    async def _read_by_id(self, pool: AsyncConnectionPool, resource_type: str, resource_id: str) -> Any:
        async with pool.connection() as conn:
            if self._set_timeout:
                await conn.execute(self._set_timeout)
            cursor = await conn.execute(
                READ_BY_ID, (resource_type, resource_id), prepare=self.prepare_reads, binary=True
            )
            return await cursor.fetchone()

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection from the pool for one unit of reads. Its statements run in autocommit (each reads the latest
        committed state, as every statement of a READ COMMITTED transaction would), so a point read is one round
        trip; behind a transaction pooler they run in a transaction that starts with the statement timeout."""
        with _unavailable_as_503(), self._pool.connection() as pooled:
            self.primary_reads += 1
            if self._set_timeout:
                pooled.execute(self._set_timeout)
            yield pooled

    def reading(self, work: Callable[[SqlReader], T], replica: bool = False) -> T:
        if replica and self.replicas is not None:
            session = SESSION.get()
            chosen = self.replicas.choose(session.fence if session is not None else 0)
            if chosen is not None:
                try:
                    return self._on_replica(chosen, work)
                except _ReplicaFailed:
                    pass  # the primary answers instead
        with self._reader() as conn:
            return work(PgReader(self, conn))

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        with self._reader() as conn:
            return PgReader(self, conn).read(resource_type, resource_id)

    def replica_states(self) -> list[dict[str, Any]]:
        return [] if self.replicas is None else self.replicas.states()

    def await_replica(self, fence: int, timeout: float) -> bool:
        if self.replicas is None:
            return False
        deadline = time.monotonic() + timeout
        while self.replicas.choose(fence) is None:
            if time.monotonic() >= deadline or not self.replicas.wait_checked(timeout=deadline - time.monotonic()):
                return False
        return True

    def _on_replica(self, replica: Replica, work: Callable[[SqlReader], T]) -> T:
        """``work`` on ``replica``; ``_ReplicaFailed`` when the replica could not run it (down, or a statement
        cancelled by a conflict with the log it replays): the reads can run again elsewhere."""
        try:
            with _too_costly(), replica.pool.connection() as conn:
                result = work(PgReader(self, conn))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._replica_failed(replica, exc)
            raise _ReplicaFailed from exc
        replica.reads += 1
        return result

    def _replica_failed(self, replica: Replica, exc: Exception) -> None:
        """A read failed on ``replica`` (the primary runs it again): cancelled by a recovery conflict, or the replica
        is down (skipped until a check finds it healthy)."""
        assert self.replicas is not None
        if isinstance(exc, psycopg.errors.SerializationFailure):  # cancelled by a recovery conflict
            log.info("read on replica %s cancelled by recovery; the primary answers", replica.name)
        else:
            self.replicas.mark_down(replica, f"a read failed ({type(exc).__name__})")

    def transact(self, work: Callable[[SqlTransaction], T]) -> T:
        with _unavailable_as_503(), self._pool.connection() as conn:
            with conn.transaction():
                if self._set_timeout:
                    conn.execute(self._set_timeout)
                tx = PgTransaction(self, conn)
                result = work(tx)
                tx.flush()
            session = SESSION.get() if self.replicas is not None else None
            if session is not None:  # the client's token: replicas must replay this far to serve its reads
                session.note_commit(primary_lsn(conn))
            return result


CREATE_FIRST = (
    "WITH r AS (INSERT INTO resource (type, id, version, last_updated, deleted, body) VALUES (%s, %s, 1, %s, 0, %s) "
    "ON CONFLICT (type, id) DO NOTHING RETURNING rid, type, id, last_updated) "
    "INSERT INTO resource_history (rid, type, id, version, last_updated, method, body, tx) "
    f"SELECT rid, type, id, 1, last_updated, 'POST', NULL, {POSTGRES.writer_tx} FROM r RETURNING rid, seq, tx"
)
"""A new resource (``SqlTransaction._put``'s INSERT) and its first history row (``history.APPEND`` with no previous
version), or no row when the id exists."""


def _unindex_statement(tables: Sequence[str]) -> str:
    """``search.index.delete_statements`` as one statement (the UID hashes, keyed by hash, go before it:
    ``drop_id_hashes``)."""
    deletes = (
        f"d{n} AS (DELETE FROM {table} WHERE rid = %(rid)s)"
        for n, table in enumerate(table for table in tables if table != ID_HASH_TABLE)
    )
    return f"WITH {', '.join(deletes)} SELECT 1"


UNINDEX = _unindex_statement(INDEX_TABLES)
UNINDEX_PLAIN = _unindex_statement(PLAIN_TABLES)  # a resource of a type without composite parameters


READ_BY_ID = "SELECT version, last_updated, deleted, body FROM resource WHERE type = %s AND id = %s"
"""The current version by id (``sqlstore.READ_CURRENT`` without the columns the caller knows or that are fixed)."""


class PgReader(SqlReader):
    """The reads of one unit of work on PostgreSQL: a point read is the hot path, so its statement is prepared on the
    server from its first run and its row comes in binary (the body as raw bytes, not the hex text ``bytea`` is
    sent as otherwise, which the server would encode and the client decode)."""

    def __init__(self, store: PostgresStore, conn: Any) -> None:
        super().__init__(store, conn)
        self._prepare = store.prepare_reads

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        row = self.conn.execute(READ_BY_ID, (resource_type, resource_id), prepare=self._prepare, binary=True).fetchone()
        return _current(resource_type, resource_id, row)


def _current(resource_type: str, resource_id: str, row: tuple[Any, ...] | None) -> Version | None:
    """The version a ``READ_BY_ID`` row gives (None: no row)."""
    if row is None:
        return None
    version, last_updated, deleted, body = row
    if deleted == 1:
        return Version(resource_type, resource_id, version, last_updated, "DELETE", None)
    return Version(resource_type, resource_id, version, last_updated, "", unpack(body))


class PgTransaction(SqlTransaction):
    """A write transaction whose search index rows are written in bulk: gathered as the writes come and sent by
    ``COPY … FROM STDIN``, one per index table, before anything in the transaction could read them (a search, a
    raw statement, a removal of a resource's rows) and before the commit. Rows go out in COPY's text format, so
    the server parses each row once instead of binding and executing an INSERT per row; a transaction Bundle of 100
    studies (about 14,000 index rows) costs a dozen statements instead of a thousand."""

    def __init__(self, store: SqlStore, conn: Any) -> None:
        super().__init__(store, conn)
        self._pending: dict[str, list[tuple[Any, ...]]] = {}  # INSERT statement → rows waiting for its COPY
        self._pending_rows = 0

    def create(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], prepared: Prepared | None = None
    ) -> WriteResult:
        """A new resource's row and its first history row in one statement (one round trip, not three); an id that
        exists already takes the general path (a new version under the row's lock)."""
        prepared = self.indexer.usable(prepared, resource_id, resource)
        last_updated = format_instant(now())
        document = stamped(resource, resource_id, 1, last_updated)
        body = orjson.dumps(document)
        row = self.conn.execute(CREATE_FIRST, (resource_type, resource_id, last_updated, pack(body))).fetchone()
        if row is None:
            return super().create(resource_type, resource_id, resource, prepared)
        rid, seq, tx = row
        self._index(rid, document, True, prepared)
        return WriteResult(Version(resource_type, resource_id, 1, last_updated, "POST", body, seq, tx), True)

    def _index(self, rid: int, resource: dict[str, Any], fresh: bool, prepared: Prepared | None = None) -> None:
        if not fresh:
            self._unindex(rid, resource["resourceType"])
        pending = self._pending
        for statement, rows in self.indexer.statements(rid, resource, self.dialect.placeholder, prepared):
            waiting = pending.get(statement)
            if waiting is None:
                pending[statement] = rows
            else:
                waiting += rows
            self._pending_rows += len(rows)
        if self._pending_rows >= COPY_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the gathered index rows (one COPY per table)."""
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, {}, 0
        cursor = self.conn.cursor()
        for statement, rows in pending.items():
            with cursor.copy(copy_statement(statement)) as copy:
                for row in rows:
                    copy.write_row(row)

    def _unindex(self, rid: int, resource_type: str) -> None:
        """Every index table's rows of ``rid`` in one statement (one round trip, not one a table), after its UID hashes
        (read from its lists, then deleted)."""
        self.flush()
        if self.indexer.has_ids(resource_type):
            drop_id_hashes(self.conn, (rid,), "%s")
        self.conn.execute(UNINDEX if self.indexer.composites(resource_type) else UNINDEX_PLAIN, {"rid": rid})

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.flush()
        return super().query(sql, params)

    def write_many(self, versions: Sequence[NewVersion], fresh_only: bool = False) -> None:
        self.flush()  # it replaces index rows of its own (storage/bulk.py): those gathered before go first
        super().write_many(versions, fresh_only)

    def execute(self, sql: str, params: Sequence[Any]) -> int:
        self.flush()
        return super().execute(sql, params)

    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        def flushed(count: int) -> None:  # after each batch, so that ANALYZE at the end sees every row
            self.flush()
            if progress is not None:
                progress(count)

        self.flush()
        return super().reindex(flushed)


class _ReplicaFailed(Exception):
    """A unit of reads could not run on a replica."""


@contextmanager
def _too_costly() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.QueryCanceled:
        raise TooCostly("A database statement ran longer than the search_timeout setting allows") from None
    except (psycopg.errors.StatementTooComplex, psycopg.errors.ProgramLimitExceeded) as exc:
        raise TooCostly(f"The request is too large for the database ({type(exc).__name__})") from None


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    try:
        with _too_costly():
            yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise ServiceUnavailable(
            f"The database cannot be reached right now; try again ({type(exc).__name__})"
        ) from None
