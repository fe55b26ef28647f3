"""PostgreSQL's pooled connections (storage/pgpool.py, storage/postgres.py): checked only after being idle, reads in
autocommit (no transaction left open between units of work), and a connection that died while idle is replaced
before a request uses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.pgpool import IdleCheck
from tests.conftest import POSTGRES_URL, SEED_STUDY, fresh_postgres_database
from tests.replicas import needs_postgres

pytestmark = needs_postgres


@pytest.fixture
def store() -> Iterator[Store]:
    with fresh_postgres_database() as url:
        opened = open_store(Settings(database=url, pool_size=2), load_registry())
        try:
            yield opened
        finally:
            opened.close()


def test_a_connection_is_checked_only_after_it_was_idle() -> None:
    assert POSTGRES_URL
    check = IdleCheck(idle_s=0.3)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        check(conn)  # never handed out before: checked
        check(conn)
        check(conn)
        assert check.checks == 1
        time.sleep(0.4)
        check(conn)
        assert check.checks == 2
    check(conn)  # just used: not checked, even closed (the pool discards a closed connection when it comes back)
    time.sleep(0.4)
    with pytest.raises(psycopg.OperationalError):
        check(conn)  # closed, idle: the check finds it dead


def test_reads_leave_no_transaction_open_and_writes_commit(store: Store) -> None:
    store.create("ImagingStudy", "s1", SEED_STUDY)

    def unit(reader: Any) -> Any:
        version = reader.read("ImagingStudy", "s1")
        return version, reader.conn.info.transaction_status, reader.conn.autocommit

    version, status, autocommit = store.reading(unit)
    assert version is not None and version.version == 1
    assert status == TransactionStatus.IDLE and autocommit  # nothing to roll back when the connection goes back
    with psycopg.connect(store.url) as other:  # type: ignore[attr-defined]
        assert other.execute("SELECT count(*) FROM resource").fetchone() == (1,)


def test_a_connection_killed_while_idle_is_replaced_before_use(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store._pool._check, "idle_s", 0.0)  # type: ignore[attr-defined]
    store.create("ImagingStudy", "s1", SEED_STUDY)
    with psycopg.connect(store.url, autocommit=True) as admin:  # type: ignore[attr-defined]
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(0.1)
    version = store.read("ImagingStudy", "s1")  # no 503: the pool's check found the dead connection
    assert version is not None and version.version == 1
