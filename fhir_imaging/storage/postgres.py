"""PostgreSQL backend (psycopg 3 with a connection pool): several server processes or machines share one database.

The schema, the statements and the search compiler are SQLite's, through the dialect table (``dialect.py``).
Resources are stored as the bytes that were sent (``bytea``), so reads serve them without re-serialising (a
``jsonb`` column would reorder their keys). Versions are assigned under a row lock (``SELECT … FOR UPDATE``), a race
to create one id is settled by the unique key (``ON CONFLICT``), and migrations run under an advisory lock, so
processes starting together migrate once. While the database cannot be reached, requests answer 503; the pool
reconnects by itself when it is back.

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

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from fhir_imaging.fhir.outcome import ServiceUnavailable, TooCostly
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.logs import redact_url
from fhir_imaging.storage.dialect import POSTGRES
from fhir_imaging.storage.replicas import Replica, ReplicaSet, primary_lsn
from fhir_imaging.storage.routing import SESSION
from fhir_imaging.storage.sqlstore import SqlReader, SqlStore, SqlTransaction

T = TypeVar("T")
log = logging.getLogger("fhir_imaging.replicas")
MIGRATION_LOCK = 7_340_147  # pg_advisory_xact_lock key for schema migrations
CONNECT_TIMEOUT_S = 5


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
        kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if transaction_pooler:
            kwargs["prepare_threshold"] = None
        else:
            kwargs["options"] = options
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=CONNECT_TIMEOUT_S,
            kwargs=kwargs,
            check=ConnectionPool.check_connection,
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
                replicas, self._primary_lsn, replica_max_lag, replica_check_interval, pool_size, options
            )

    def _primary_lsn(self) -> int:
        with self._pool.connection() as conn:
            return primary_lsn(conn)

    def _migrate(self, tx: SqlTransaction) -> None:
        tx.conn.execute("SET LOCAL statement_timeout = 0")  # building an index on a large table takes its time
        tx.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        super()._migrate(tx)

    def ping(self, timeout: float) -> None:
        """``SELECT 1`` on a pooled connection, waiting at most ``timeout`` seconds for one (the pool checks it
        before handing it out) and as long for the answer."""
        with self._pool.connection(timeout=timeout) as conn:
            conn.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        if self.replicas is not None:
            self.replicas.close()
        self._pool.close()

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection from the pool for one unit of reads (one transaction: psycopg opens it at the first statement
        and the pool ends it when the connection is given back)."""
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
        return super().reading(work)

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
        assert self.replicas is not None
        try:
            with _too_costly(), replica.pool.connection() as conn:
                result = work(SqlReader(self, conn))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, psycopg.errors.SerializationFailure):  # cancelled by a recovery conflict
                log.info("read on replica %s cancelled by recovery; the primary answers", replica.name)
            else:
                self.replicas.mark_down(replica, f"a read failed ({type(exc).__name__})")
            raise _ReplicaFailed from exc
        replica.reads += 1
        return result

    def transact(self, work: Callable[[SqlTransaction], T]) -> T:
        with _unavailable_as_503(), self._pool.connection() as conn:
            with conn.transaction():
                if self._set_timeout:
                    conn.execute(self._set_timeout)
                result = work(SqlTransaction(self, conn))
            session = SESSION.get() if self.replicas is not None else None
            if session is not None:  # the client's token: replicas must replay this far to serve its reads
                session.note_commit(primary_lsn(conn))
            return result


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
