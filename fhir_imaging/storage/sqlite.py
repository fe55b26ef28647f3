"""SQLite backend (stdlib ``sqlite3``): WAL journal, one writer at a time, concurrent readers.

Reads take a connection from a pool of idle reader connections (opened as needed, one per concurrent reader) and
give it back. Writes go through one writer connection under an in-process lock, with ``BEGIN IMMEDIATE``, so writers
queue instead of failing, and the writes that queued up commit together (group commit, ``transact``);
``busy_timeout`` covers writers in other processes (``--workers``).
``synchronous=FULL`` (default) makes every acknowledged write durable across a crash of the process or of the
machine; ``normal`` survives a crash of the process (``kill -9``) but may lose the last commits on power loss.
The statements are shared with PostgreSQL (``sqlstore.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fhir_imaging.fhir.outcome import TooCostly
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.storage.base import Version
from fhir_imaging.storage.dialect import SQLITE
from fhir_imaging.storage.sqlstore import SqlStore, SqlTransaction, read_current

T = TypeVar("T")
BUSY_TIMEOUT_MS = 60_000
WRITER_CACHE_KIB = 256 * 1024  # the writer's page cache: the index B-trees of a large database stay in memory
READER_CACHE_KIB = 8 * 1024
PROGRESS_STEPS = 10_000
BULK_CHECKPOINT_PAGES = 32_768  # 128 MiB of log at 4 KiB pages (relaxed_sync)
# SQLite's refusals of a statement that is too large (sqlite3.OperationalError messages): a search this big is refused.
TOO_LARGE = (
    "Expression tree is too large",
    "parser stack overflow",
    "too many SQL variables",
    "too many columns",
    "too many terms in compound SELECT",
    "too many FROM clause terms",
    "at most 64 tables in a join",
    "LIKE or GLOB pattern too complex",
    "string or blob too big",
)


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` → ``relative.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``; ``sqlite://`` → memory."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a SQLite URL: {url}")
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def use_wal(conn: sqlite3.Connection, timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Put the database in WAL mode. The first connection to a database in rollback mode converts it, which needs
    an exclusive lock; when other processes convert it at the same moment (several ``migrate`` or ``serve`` started
    together on a new file), SQLite answers "database is locked" at once rather than calling the busy handler (the
    wait could deadlock), so the conversion is tried again until it succeeds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if str(exc) != "database is locked" or time.monotonic() > deadline:
                raise
        else:
            if str(mode).lower() == "wal":
                return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"the database stays in {mode} journal mode; WAL is needed")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class _Job:
    """One caller's piece of work in a group commit."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[SqlTransaction], object]) -> None:
        self.work = work
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class SQLiteStore(SqlStore):
    dialect = SQLITE
    reads_inline = True

    def __init__(
        self,
        url: str,
        registry: Registry,
        synchronous: str = "full",
        query_timeout: float = 30.0,
        migrate: bool = True,
    ) -> None:
        super().__init__(registry)
        self.query_timeout = query_timeout
        self.path = path_from_url(url)
        if self.path == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared between threads: give a file path")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous.upper()
        self._idle: list[sqlite3.Connection] = []  # reader connections not in use (list.pop/append are atomic)
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Job] = []
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = self._open(WRITER_CACHE_KIB)  # the one connection that writes, used under the write lock
        self._open_schema(migrate)

    def _open(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        use_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _take(self) -> sqlite3.Connection:
        try:
            return self._idle.pop()
        except IndexError:
            return self._open(READER_CACHE_KIB)

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._idle.append(conn)

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The hot path (on the event loop): the pool without a context manager."""
        conn = self._take()
        try:
            return read_current(conn, SQLITE, resource_type, resource_id)
        finally:
            self._idle.append(conn)

    def run_query(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A search statement, interrupted when it runs past ``query_timeout`` seconds (SQLite calls the progress
        handler every ``PROGRESS_STEPS`` virtual machine steps, a fraction of a millisecond), and refused when it is
        larger than SQLite takes (its expression depth, variable and column limits): both a 400 too-costly."""
        deadline = time.monotonic() + self.query_timeout
        conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if text == "interrupted":
                raise TooCostly(f"The search ran longer than {self.query_timeout:g} s, the most allowed") from None
            if text.startswith(TOO_LARGE):
                raise TooCostly(f"The search is too large for the database ({text})") from None
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def transact(self, work: Callable[[SqlTransaction], T]) -> T:
        """Group commit: the thread that gets the write lock runs every queued piece of work, each in a savepoint
        of one transaction, and commits them together (one flush for all); each caller gets its own result or
        error. A piece that fails is rolled back to its savepoint alone."""
        job = _Job(work)
        with self._queue_lock:
            self._queue.append(job)
        with self._write_lock:
            if not job.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run_batch(self._writer, batch)
        outcome: T = job.outcome()
        return outcome

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.work(SqlTransaction(self, conn))
                except Exception as exc:  # handed to the job's own caller; the others go on
                    conn.execute("ROLLBACK TO job")
                    job.error = exc
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException as exc:  # the batch cannot commit: nothing of it is stored, every caller learns why
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.result, job.error = None, job.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for job in batch:
                job.done = True

    @contextmanager
    def relaxed_sync(self) -> Iterator[None]:
        """For a bulk load: commits that do not wait for the disk (``synchronous=NORMAL``; in WAL mode a crash, even
        of the machine, keeps every committed transaction whole but may lose the last ones) and checkpoints every
        ``BULK_CHECKPOINT_PAGES`` of log rather than every thousand pages (an index page that several batches
        change is copied to the database once, and synced once); at the end a checkpoint that syncs the log and the
        database file, so that everything committed is durable when this returns. A store opened with
        ``synchronous`` off or normal keeps it."""
        relax = self.synchronous in ("FULL", "EXTRA")
        with self._write_lock:
            pages = int(self._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {max(pages, BULK_CHECKPOINT_PAGES)}")
            if relax:
                self._writer.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            with self._write_lock:
                if relax:
                    self._writer.execute(f"PRAGMA synchronous = {self.synchronous}")
                self._writer.execute(f"PRAGMA wal_autocheckpoint = {pages}")
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._idle.clear()
