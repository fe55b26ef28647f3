"""Read replicas at the store: which reads a real streaming replica serves (PostgreSQL only: SQLite has none)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_imaging.config import Settings
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.storage import open_store
from fhir_imaging.storage.base import Reader, Store
from fhir_imaging.storage.routing import session
from tests.conftest import SEED_STUDY
from tests.replicas import (
    needs_postgres,
    replay_paused,
    replica_served,
    replica_settings,
    replica_stopped,
    replicas_of,
    replicated_database,
    wait_usable,
)

pytestmark = needs_postgres


@pytest.fixture
def store() -> Iterator[Store]:
    with replicated_database() as urls:
        settings = replica_settings(urls)
        opened = open_store(settings, load_registry())
        try:
            wait_usable(opened)
            yield opened
        finally:
            opened.close()


def in_recovery(reader: Reader) -> bool:
    """Whether ``reader``'s connection is to a replica (a server replaying the primary's log)."""
    return bool(reader.query("SELECT pg_is_in_recovery()", [])[0][0])


def test_reads_that_may_go_to_a_replica_go_to_the_replica(store: Store) -> None:
    before = replica_served(store)
    assert store.reading(in_recovery, replica=True) is True
    assert replica_served(store) == before + 1
    assert store.reading(in_recovery) is False  # the default: the primary


def test_writes_go_to_the_primary(store: Store) -> None:
    assert store.transact(in_recovery) is False
    written = store.create("ImagingStudy", "s1", dict(SEED_STUDY))
    assert written.created


def test_a_session_reads_its_own_writes(store: Store) -> None:
    """Replay paused: the replica does not have the write, so the session that wrote reads from the primary, and
    a read outside it (no token) gets the replica's older answer."""
    with replay_paused():

        def read(reader: Reader) -> Any:
            return in_recovery(reader), reader.read("ImagingStudy", "s2")

        with session() as own:
            store.create("ImagingStudy", "s2", dict(SEED_STUDY))
            assert own.written > 0
            on_replica, found = store.reading(read, replica=True)
            assert not on_replica and found is not None
        on_replica, found = store.reading(read, replica=True)
        assert on_replica and found is None  # stale, as a replica may be: within --replica-max-lag
    replicas = replicas_of(store)
    wait_usable(store)
    fence = own.written
    replicas.wait_checked(2)
    with session(after=fence):
        assert store.reading(read, replica=True) == (True, store.read("ImagingStudy", "s2"))


def test_a_replica_that_lags_too_far_is_skipped_until_it_catches_up(store: Store) -> None:
    replicas = replicas_of(store)
    replicas.max_lag = 0.3
    with replay_paused():
        store.create("ImagingStudy", "s3", dict(SEED_STUDY))  # the primary moves on, the replica does not
        wait_usable(store, usable=False)
        assert replicas.replicas[0].lag is not None and replicas.replicas[0].lag > 0.3
        found = store.reading(lambda reader: (in_recovery(reader), reader.read("ImagingStudy", "s3")), replica=True)
        assert found[0] is False and found[1] is not None
    wait_usable(store)
    assert store.reading(in_recovery, replica=True) is True


def test_a_replica_that_goes_down_is_skipped_then_used_again(store: Store) -> None:
    replicas = replicas_of(store)
    replicas.interval = 600  # the checks below are made by the test, when it chooses
    replicas.wait_checked()
    replica = replicas.replicas[0]
    store.create("ImagingStudy", "s4", dict(SEED_STUDY))
    with replica_stopped():
        # Before any check notices: the read fails on the replica and runs again on the primary.
        assert replica.usable
        found = store.reading(lambda reader: (in_recovery(reader), reader.read("ImagingStudy", "s4")), replica=True)
        assert found[0] is False and found[1] is not None
        assert not replica.usable
        replicas.check()
        assert not replica.usable and replica.replayed == -1
        assert store.reading(in_recovery, replica=True) is False
    deadline = time.monotonic() + 30
    while not replica.usable:  # it answers again once it has started and caught up
        assert time.monotonic() < deadline
        time.sleep(0.1)
        replicas.check()
    before = replica_served(store)
    assert store.reading(in_recovery, replica=True) is True
    assert replica_served(store) == before + 1


def test_replicas_need_postgresql(tmp_path: Any) -> None:
    settings = Settings(database=f"sqlite:///{tmp_path / 'x.db'}", database_replica=("postgresql://x/y",))
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_store(settings, load_registry())
