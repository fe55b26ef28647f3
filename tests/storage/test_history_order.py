"""History paging never skips a version, even when transactions commit in another order than they took their
history sequence numbers (storage/history.py): on PostgreSQL a transaction A takes a sequence number, a transaction B
takes a later one and commits, a reader pages through the history, then A commits. A reader that went on from the
newest position it had seen must still find A's version; one that follows ``next`` links sees each version once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fhir_imaging.config import Settings
from fhir_imaging.export.snapshot import Snapshot, settled, snapshot_page
from fhir_imaging.fhir.registry import Registry, load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import HistoryQuery, Store, Transaction, Version
from fhir_imaging.storage.sqlstore import SqlStore
from tests.conftest import POSTGRES_URL, fresh_postgres_database

REGISTRY: Registry = load_registry()
needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set")


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = open_store(Settings(database=database, pool_size=4), REGISTRY)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def pg_store() -> Iterator[Store]:
    if not POSTGRES_URL:
        pytest.skip("FHIR_IMAGING_TEST_POSTGRES is not set")
    with fresh_postgres_database() as url:
        opened = open_store(Settings(database=url, pool_size=4), REGISTRY)
        try:
            yield opened
        finally:
            opened.close()


@contextmanager
def in_flight(store: Store, work: Callable[[Transaction], object]) -> Iterator[Callable[[], None]]:
    """Run ``work`` in a transaction on another thread and hold it open; the yielded function commits it."""
    written, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold(tx: Transaction) -> None:
        work(tx)
        written.set()
        assert release.wait(30)

    def run() -> None:
        try:
            store.transact(hold)
        except BaseException as exc:  # reported by the caller
            failure.append(exc)
            written.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert written.wait(30)

    def commit() -> None:
        release.set()
        thread.join(30)
        assert not failure, failure

    try:
        yield commit
    finally:
        release.set()
        thread.join(30)


def _key(version: Version) -> tuple[str, str, int]:
    return version.resource_type, version.id, version.version


def _follow(store: Store, query: HistoryQuery) -> list[Version]:
    """Every page of a history, following the ``next`` cursors."""
    seen: list[Version] = []
    while True:
        page, cursor = store.history(query)
        seen += page
        if cursor is None:
            return seen
        query = HistoryQuery(query.resource_type, query.id, query.since, cursor, query.count)


def _settled(store: Store, versions: int) -> None:
    """Wait until the system history shows ``versions`` versions: no transaction of the cluster older than ours (an
    autovacuum's, say) holds the horizon back before a test makes its own transaction wait."""
    deadline = time.monotonic() + 10
    while len(_follow(store, HistoryQuery(count=100))) < versions:
        assert time.monotonic() < deadline, "the history horizon did not pass the versions written"
        time.sleep(0.05)


def _newer_than(store: Store, query: HistoryQuery, last: Version | None) -> list[Version]:
    """A poll: the pages from the newest down to the position ``last`` (the newest version seen before)."""
    seen: list[Version] = []
    for version in _follow(store, query):
        if last is not None and (version.tx, version.seq) <= (last.tx, last.seq):
            break
        seen.append(version)
    return seen


@needs_postgres
@pytest.mark.parametrize("resource_type", [None, "Patient"])
def test_a_version_committed_late_is_never_skipped(pg_store: Store, resource_type: str | None) -> None:
    for number in range(5):
        pg_store.create("Patient", f"p{number}", _patient(f"P{number}"))
    pg_store.update("Patient", "p0", _patient("P0 again"))
    _settled(pg_store, 6)
    query = HistoryQuery(resource_type=resource_type, count=2)
    with in_flight(pg_store, lambda tx: tx.update("Patient", "p1", _patient("late"))) as commit_a:
        pg_store.create("Patient", "early", _patient("B"))  # B: a later sequence number, committed first
        served = _follow(pg_store, query)
        since = _follow(pg_store, HistoryQuery(resource_type, None, served[-1].last_updated, None, 2))
        commit_a()
    everything = _follow(pg_store, query)
    assert len(everything) == 8 and len({_key(v) for v in everything}) == 8
    # While A was in flight the history stopped below it: neither A's version nor B's (which came after) was shown.
    assert ("Patient", "p1", 2) not in {_key(v) for v in served}
    assert ("Patient", "early", 1) not in {_key(v) for v in served}
    assert since == served  # _since (here: every version) pages the same way
    polled = _newer_than(pg_store, query, served[0])
    assert sorted(_key(v) for v in served + polled) == sorted(_key(v) for v in everything)
    assert {_key(v) for v in polled} == {("Patient", "p1", 2), ("Patient", "early", 1)}
    assert [_key(v) for v in everything[-len(served) :]] == [_key(v) for v in served]  # pages served never change


@needs_postgres
def test_a_resource_written_by_an_older_transaction_stays_in_version_order(pg_store: Store) -> None:
    """A transaction that began writing before another wrote version 1 of a resource writes its version 2: the
    history still lists version 2 as the newer one."""

    def write_other_then_wait(tx: Transaction) -> None:
        tx.create("Patient", "other", _patient("first write"))

    with in_flight(pg_store, write_other_then_wait) as commit_a:
        pg_store.create("Patient", "r", _patient("v1"))
        commit_a()
    pg_store.transact(lambda tx: tx.update("Patient", "r", _patient("v2")))
    versions = [v for v in _follow(pg_store, HistoryQuery(count=1)) if v.id == "r"]
    assert [v.version for v in versions] == [2, 1]


@needs_postgres
def test_an_instance_history_shows_its_versions_while_other_writes_are_in_flight(pg_store: Store) -> None:
    with in_flight(pg_store, lambda tx: tx.create("Patient", "slow", _patient("slow"))) as commit_a:
        pg_store.create("Patient", "quick", _patient("quick"))
        pg_store.update("Patient", "quick", _patient("quick again"))
        page, _ = pg_store.history(HistoryQuery("Patient", "quick"))
        assert [v.version for v in page] == [2, 1]
        assert pg_store.history(HistoryQuery())[0] == []  # the system history waits for the older transaction
        commit_a()
    assert len(pg_store.history(HistoryQuery())[0]) == 3


@needs_postgres
def test_an_export_snapshot_waits_for_the_writes_in_flight_at_its_kick_off(pg_store: Store) -> None:
    assert isinstance(pg_store, SqlStore)
    pg_store.create("Patient", "kept", _patient("kept"))

    def kick_off(reader: Any) -> Snapshot:
        row = reader.query(f"SELECT max(seq), {reader.dialect.history_frontier} FROM resource_history", ())[0]
        return Snapshot(int(row[0]), int(row[1]))

    def ids(snapshot: Snapshot) -> list[str]:
        return [row.id for row in pg_store.reading(lambda r: snapshot_page(r, "Patient", snapshot, ""))]

    with in_flight(pg_store, lambda tx: tx.create("Patient", "a", _patient("in flight"))) as commit_a:
        pg_store.create("Patient", "b", _patient("committed before the kick-off"))
        snapshot = pg_store.reading(kick_off)
        assert not pg_store.reading(lambda r: settled(r, snapshot))
        commit_a()
    assert pg_store.reading(lambda r: settled(r, snapshot))
    pg_store.create("Patient", "after", _patient("after the kick-off"))
    pg_store.update("Patient", "kept", _patient("changed after the kick-off"))
    assert ids(snapshot) == ["a", "b", "kept"]
    rows = pg_store.reading(lambda r: snapshot_page(r, "Patient", snapshot, ""))
    assert b"changed" not in rows[-1].body


def test_paging_with_next_cursors_and_since_sees_every_version_once(store: Store) -> None:
    for number in range(7):
        store.create("Patient", f"p{number}", _patient(f"P{number}"))
        if number % 2:
            store.update("Patient", f"p{number}", _patient(f"P{number} again"))
    store.delete("Patient", "p0")
    everything = _follow(store, HistoryQuery(count=3))
    assert len(everything) == 11 and len({_key(v) for v in everything}) == 11
    assert [(v.tx, v.seq) for v in everything] == sorted(((v.tx, v.seq) for v in everything), reverse=True)
    middle = everything[5].last_updated
    since = _follow(store, HistoryQuery(since=middle, count=2))
    assert [_key(v) for v in since] == [_key(v) for v in everything if v.last_updated >= middle]
    assert [_key(v) for v in _follow(store, HistoryQuery("Patient", "p1", count=1))] == [
        ("Patient", "p1", 2),
        ("Patient", "p1", 1),
    ]
