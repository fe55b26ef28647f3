"""SQLite backend (stdlib ``sqlite3``): WAL journal, one writer at a time, concurrent readers.

Each thread has its own connection. Writes take an in-process lock and ``BEGIN IMMEDIATE``, so writers queue instead
of failing; ``busy_timeout`` covers writers in other processes (``--workers``). ``synchronous=FULL`` (default) makes
every acknowledged write durable across a crash of the process or of the machine; ``normal`` survives a crash of the
process (``kill -9``) but may lose the last commits on power loss.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fhir_imaging.fhir.outcome import PreconditionFailed
from fhir_imaging.fhir.resource import format_instant, now, stamp
from fhir_imaging.storage.base import HistoryQuery, Version, WriteResult
from fhir_imaging.storage.schema import MIGRATIONS

T = TypeVar("T")
BUSY_TIMEOUT_MS = 60_000
VERSION_COLUMNS = "type, id, version, last_updated, method, body, seq"


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` → ``relative.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``; ``sqlite://`` → memory."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a SQLite URL: {url}")
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def _version(row: tuple[Any, ...]) -> Version:
    return Version(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


class SQLiteStore:
    def __init__(self, url: str, synchronous: str = "full") -> None:
        self.path = path_from_url(url)
        if self.path == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared between threads: give a file path")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._migrate()

    # -- connections -------------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for number, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- reads -------------------------------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        row = (
            self._connection()
            .execute(
                "SELECT type, id, version, last_updated, CASE deleted WHEN 1 THEN 'DELETE' ELSE '' END, body, 0 "
                "FROM resource WHERE type = ? AND id = ?",
                (resource_type, resource_id),
            )
            .fetchone()
        )
        return _version(row) if row else None

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        row = (
            self._connection()
            .execute(
                f"SELECT {VERSION_COLUMNS} FROM resource_history WHERE type = ? AND id = ? AND version = ?",
                (resource_type, resource_id, version),
            )
            .fetchone()
        )
        return _version(row) if row else None

    def count_versions(self, resource_type: str, resource_id: str) -> int:
        row = (
            self._connection()
            .execute("SELECT count(*) FROM resource_history WHERE type = ? AND id = ?", (resource_type, resource_id))
            .fetchone()
        )
        return int(row[0])

    def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
        where, params = [], []
        if query.resource_type is not None:
            where.append("type = ?")
            params.append(query.resource_type)
        if query.id is not None:
            where.append("id = ?")
            params.append(query.id)
        if query.since is not None:
            where.append("last_updated >= ?")
            params.append(query.since)
        if query.at_or_before_seq is not None:
            where.append("seq <= ?")
            params.append(query.at_or_before_seq)
        sql = f"SELECT {VERSION_COLUMNS} FROM resource_history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(query.count + 1)
        rows = self._connection().execute(sql, params).fetchall()
        versions = [_version(row) for row in rows[: query.count]]
        cursor = rows[query.count][6] if len(rows) > query.count else None
        return versions, cursor

    # -- writes ------------------------------------------------------------------------------------------------

    def transact(self, work: Callable[[SQLiteTransaction], T]) -> T:
        """Run ``work`` in one write transaction: everything it wrote commits together, or nothing on an error."""
        with self._write() as conn:
            return work(SQLiteTransaction(self, conn))

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult:
        return self.transact(lambda tx: tx.create(resource_type, resource_id, resource))

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult:
        return self.transact(lambda tx: tx.update(resource_type, resource_id, resource, if_match))

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        return self.transact(lambda tx: tx.delete(resource_type, resource_id, if_match))

    def _on_write(self, conn: sqlite3.Connection, rid: int, resource_type: str, body: bytes) -> None:
        """Hook for index maintenance, inside the write's transaction."""

    def _on_delete(self, conn: sqlite3.Connection, rid: int, resource_type: str) -> None:
        """Hook for index maintenance, inside the delete's transaction."""


class SQLiteTransaction:
    """The writes (and reads) of one open write transaction; made by ``SQLiteStore.transact``."""

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection) -> None:
        self.store = store
        self.conn = conn

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        return self.store.read(resource_type, resource_id)  # the same connection: sees this transaction's writes

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult:
        return self._put(resource_type, resource_id, resource, None, "POST")

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult:
        return self._put(resource_type, resource_id, resource, if_match, "PUT")

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        conn = self.conn
        current = conn.execute(
            "SELECT rid, version, deleted FROM resource WHERE type = ? AND id = ?", (resource_type, resource_id)
        ).fetchone()
        _check_if_match(if_match, current[1] if current else None, resource_type, resource_id)
        if current is None or current[2]:
            return None
        rid, version = current[0], current[1] + 1
        last_updated = format_instant(now())
        conn.execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 1, body = NULL WHERE rid = ?",
            (version, last_updated, rid),
        )
        seq = self._append_history(rid, resource_type, resource_id, version, last_updated, "DELETE", None)
        self.store._on_delete(conn, rid, resource_type)
        return Version(resource_type, resource_id, version, last_updated, "DELETE", None, seq)

    def _put(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None,
        method: str,
    ) -> WriteResult:
        conn = self.conn
        current = conn.execute(
            "SELECT rid, version, deleted FROM resource WHERE type = ? AND id = ?", (resource_type, resource_id)
        ).fetchone()
        _check_if_match(if_match, current[1] if current else None, resource_type, resource_id)
        last_updated = format_instant(now())
        if current is None:
            version = 1
            body = stamp(resource, resource_id, version, last_updated)
            rid = conn.execute(
                "INSERT INTO resource (type, id, version, last_updated, deleted, body) VALUES (?, ?, ?, ?, 0, ?)",
                (resource_type, resource_id, version, last_updated, body),
            ).lastrowid
            assert rid is not None
            created = True
        else:
            rid, version, created = current[0], current[1] + 1, bool(current[2])
            body = stamp(resource, resource_id, version, last_updated)
            conn.execute(
                "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, body = ? WHERE rid = ?",
                (version, last_updated, body, rid),
            )
        seq = self._append_history(rid, resource_type, resource_id, version, last_updated, method, body)
        self.store._on_write(conn, rid, resource_type, body)
        return WriteResult(Version(resource_type, resource_id, version, last_updated, method, body, seq), created)

    def _append_history(
        self,
        rid: int,
        resource_type: str,
        resource_id: str,
        version: int,
        last_updated: str,
        method: str,
        body: bytes | None,
    ) -> int:
        seq = self.conn.execute(
            "INSERT INTO resource_history (rid, type, id, version, last_updated, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, resource_type, resource_id, version, last_updated, method, body),
        ).lastrowid
        assert seq is not None
        return seq


def _check_if_match(if_match: int | None, current: int | None, resource_type: str, resource_id: str) -> None:
    if if_match is not None and if_match != current:
        found = f"version {current}" if current is not None else "no such resource"
        raise PreconditionFailed(
            f"If-Match asked for version {if_match} of {resource_type}/{resource_id}, but the server has {found}",
            "If-Match",
        )
