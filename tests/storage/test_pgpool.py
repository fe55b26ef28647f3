"""PostgreSQL's pooled connections (storage/pgpool.py, storage/postgres.py): checked only after being idle, reads in
autocommit (no transaction left open between units of work), and a connection that died while idle is replaced
before a request uses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.pq import TransactionStatus
from starlette.testclient import TestClient

from fhir_imaging.app import create_app
from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.pgpool import IdleCheck
from fhir_imaging.storage.postgres import READ_BY_ID
from tests.conftest import BASE, POSTGRES_URL, SEED_STUDY, fresh_postgres_database
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


PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE statement = %s"
READ_AS_SENT = READ_BY_ID.replace("%s", "$1", 1).replace("%s", "$2", 1)  # the placeholders psycopg sends


def test_a_point_read_is_prepared_on_its_first_run(store: Store) -> None:
    store.create("ImagingStudy", "s1", SEED_STUDY)

    def unit(reader: Any) -> Any:
        version = reader.read("ImagingStudy", "s1")
        return version, reader.conn.execute(PREPARED, (READ_AS_SENT,)).fetchone()[0]

    version, prepared = store.reading(unit)
    assert version is not None and version.version == 1 and version.method == ""
    assert prepared == 1  # psycopg alone would prepare it from its fifth run on the connection
    assert version.body is not None and orjson.loads(version.body)["id"] == "s1"  # the body came in binary


def test_behind_a_transaction_pooler_no_point_read_is_prepared() -> None:
    with fresh_postgres_database() as url:
        pooled = open_store(Settings(database=url, pool_size=1, transaction_pooler=True), load_registry())
        try:
            pooled.create("ImagingStudy", "s1", SEED_STUDY)

            def unit(reader: Any) -> Any:
                for _ in range(6):
                    assert reader.read("ImagingStudy", "s1") is not None
                return reader.conn.execute(PREPARED, (READ_AS_SENT,)).fetchone()[0]

            assert pooled.reading(unit) == 0
        finally:
            pooled.close()


def test_a_point_read_of_a_deleted_resource_is_its_deletion(store: Store) -> None:
    store.create("ImagingStudy", "s1", SEED_STUDY)
    store.delete("ImagingStudy", "s1")
    for version in (store.read("ImagingStudy", "s1"), store.reading(lambda reader: reader.read("ImagingStudy", "s1"))):
        assert version is not None and version.deleted
        assert (version.version, version.method, version.body) == (2, "DELETE", None)
    assert store.read("ImagingStudy", "never") is None


def test_reads_by_id_over_http_survive_connections_killed_while_idle() -> None:
    with fresh_postgres_database() as url:
        app = create_app(Settings(database=url, pool_size=2))
        with TestClient(app, base_url=BASE) as client:
            assert app.state.read_threads is not None  # vreads go to the app's own threads
            created = client.post("/ImagingStudy", json=SEED_STUDY).json()
            assert client.get(f"/ImagingStudy/{created['id']}").status_code == 200  # the point-read pool's in use
            store = app.state.service.store
            store._pool._check.idle_s = 0.0  # every connection is checked
            store._point_reads._check.idle_s = 0.0
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            time.sleep(0.1)
            for _ in range(3):
                response = client.get(f"/ImagingStudy/{created['id']}")
                assert response.status_code == 200 and response.json() == created
                assert client.get(f"/ImagingStudy/{created['id']}/_history/1").json() == created
        assert app.state.read_threads is None  # shut down with the app
        assert store._point_reads is None


def _requests(pool: Any) -> int:
    return int(pool.get_stats().get("requests_num", 0))


def test_reads_by_id_over_http_wait_on_the_event_loop_not_in_a_thread() -> None:
    with fresh_postgres_database() as url:
        app = create_app(Settings(database=url, pool_size=2))
        with TestClient(app, base_url=BASE) as client:
            created = client.post("/ImagingStudy", json=SEED_STUDY).json()
            store = app.state.service.store
            on_loop, in_threads = _requests(store._point_reads), _requests(store._pool)
            for _ in range(5):
                assert client.get(f"/ImagingStudy/{created['id']}").json() == created
            assert client.get("/ImagingStudy/never").status_code == 404
            client.delete(f"/ImagingStudy/{created['id']}")
            in_threads = _requests(store._pool)
            gone = client.get(f"/ImagingStudy/{created['id']}")
            assert gone.status_code == 410 and gone.headers["etag"] == 'W/"2"'
            assert _requests(store._point_reads) == on_loop + 7
            assert _requests(store._pool) == in_threads  # none of them took a connection of the threads' pool


def test_behind_a_transaction_pooler_reads_by_id_over_http_are_never_prepared() -> None:
    with fresh_postgres_database() as url:
        app = create_app(Settings(database=url, pool_size=1, transaction_pooler=True))
        with TestClient(app, base_url=BASE) as client:
            created = client.post("/ImagingStudy", json=SEED_STUDY).json()
            for _ in range(6):
                assert client.get(f"/ImagingStudy/{created['id']}").json() == created
            store = app.state.service.store

            async def prepared() -> Any:
                async with store._point_reads.connection() as conn:  # the pool's one connection
                    return await (await conn.execute(PREPARED, (READ_AS_SENT,))).fetchone()

            assert client.portal.call(prepared) == (0,)
