"""SQLite backend (stdlib ``sqlite3``): WAL journal, one writer at a time, concurrent readers.

Each thread has its own connection. Writes take an in-process lock and ``BEGIN IMMEDIATE``, so writers queue instead
of failing; ``busy_timeout`` covers writers in other processes (``--workers``). ``synchronous=FULL`` (default) makes
every acknowledged write durable across a crash of the process or of the machine; ``normal`` survives a crash of the
process (``kill -9``) but may lose the last commits on power loss. The statements are shared with PostgreSQL
(``sqlstore.py``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from fhir_imaging.storage.dialect import SQLITE
from fhir_imaging.storage.sqlstore import SqlStore, SqlTransaction

T = TypeVar("T")
BUSY_TIMEOUT_MS = 60_000


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` → ``relative.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``; ``sqlite://`` → memory."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a SQLite URL: {url}")
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


class SQLiteStore(SqlStore):
    dialect = SQLITE
    reads_inline = True

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
        with self._write() as conn:
            self._apply_migrations(conn)

    def _thread_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (inside a write transaction, the transaction's)."""
        yield self._thread_connection()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._thread_connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def transact(self, work: Callable[[SqlTransaction], T]) -> T:
        with self._write() as conn:
            return work(SqlTransaction(self, conn))

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
