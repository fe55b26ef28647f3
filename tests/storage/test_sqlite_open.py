"""Several processes (here threads, each with its own connection) opening one new SQLite file at the same moment all
get it in WAL mode: SQLite refuses the concurrent conversion from rollback mode at once ("database is locked", no
busy wait), and ``use_wal`` tries again."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from fhir_imaging.storage.sqlite import use_wal

OPENERS = 4
ROUNDS = 60  # without the retry, about one connection in twenty-five failed here


def _rollback_mode_database(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()


def test_connections_converting_a_database_together_all_get_wal(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for round_number in range(ROUNDS):
        path = tmp_path / f"{round_number}.db"
        _rollback_mode_database(path)
        start = threading.Barrier(OPENERS)

        def open_it(path: Path = path, start: threading.Barrier = start) -> None:
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("PRAGMA busy_timeout = 60000")
                start.wait()
                try:
                    use_wal(conn)
                    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                except BaseException as exc:  # collected: the assertion below reports them
                    failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(OPENERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_a_lock_held_past_the_timeout_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    _rollback_mode_database(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            try:
                use_wal(conn, timeout=0.2)
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
            else:
                raise AssertionError("use_wal succeeded while another connection held the database exclusively")
