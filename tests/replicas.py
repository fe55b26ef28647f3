"""A fresh database on the test PostgreSQL and its streaming replica (scripts/postgres.sh ``start_test_replica``),
and the replica's pg_ctl: the read-replica tests stop, start and pause it."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from fhir_imaging.config import Settings
from fhir_imaging.storage.base import Store
from fhir_imaging.storage.postgres import PostgresStore
from fhir_imaging.storage.replicas import ReplicaSet
from tests.conftest import POSTGRES_URL, fresh_postgres_database

REPLICA_URL = os.environ.get("FHIR_IMAGING_TEST_POSTGRES_REPLICA")
REPLICA_PG_CTL = os.environ.get("FHIR_IMAGING_TEST_REPLICA_PG_CTL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="FHIR_IMAGING_TEST_POSTGRES is not set (scripts/test starts a PostgreSQL)"
)


@dataclass(frozen=True)
class Replicated:
    primary: str  # URL of a fresh database on the primary
    replica: str  # URL of the same database on the replica


@contextmanager
def replicated_database() -> Iterator[Replicated]:
    """A fresh database and its URL on the replica. With a PostgreSQL to test on, a missing replica is a failure,
    not a skip: scripts/test starts both."""
    if not REPLICA_URL:
        pytest.fail(
            "FHIR_IMAGING_TEST_POSTGRES is set but FHIR_IMAGING_TEST_POSTGRES_REPLICA is not: scripts/test starts a "
            "streaming replica (scripts/postgres.sh start_test_replica)"
        )
    with fresh_postgres_database() as url:
        yield Replicated(url, REPLICA_URL.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1])


def replica_settings(urls: Replicated, **extra: Any) -> Settings:
    """A primary with its one replica, checked every 0.1 s and allowed to trail 30 s (the tests wait for checks)."""
    return Settings(
        database=urls.primary,
        pool_size=4,
        database_replica=(urls.replica,),
        replica_max_lag=30.0,
        replica_check_interval=0.1,
        **extra,
    )


def replicas_of(store: Store) -> ReplicaSet:
    assert isinstance(store, PostgresStore) and store.replicas is not None
    return store.replicas


def wait_until(condition: object, replicas: ReplicaSet, timeout: float = 30.0) -> None:
    """Let the checker run rounds until ``condition()`` holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the replica checker did not get there in time"
        replicas.wait_checked(timeout=timeout)


def wait_usable(store: Store, usable: bool = True) -> None:
    replicas = replicas_of(store)
    wait_until(lambda: replicas.replicas[0].usable is usable, replicas)


def replica_served(store: Store) -> int:
    return replicas_of(store).replicas[0].reads


def _pg_ctl(*args: str) -> None:
    if not REPLICA_PG_CTL:
        pytest.fail("FHIR_IMAGING_TEST_REPLICA_PG_CTL is not set: scripts/test starts the replica")
    subprocess.run([*shlex.split(REPLICA_PG_CTL), *args], check=True, capture_output=True, timeout=120)


def _restartpoint() -> None:
    """Make the replica's restart cheap: a checkpoint on the primary, replayed, then a restartpoint on the replica
    (after a crash a replica replays the log from its last restartpoint; the suite's CREATE DATABASEs make that log
    long)."""
    assert POSTGRES_URL and REPLICA_URL
    with psycopg.connect(POSTGRES_URL, autocommit=True) as primary:
        primary.execute("CHECKPOINT")
        lsn = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
    with psycopg.connect(REPLICA_URL, autocommit=True) as replica:
        deadline = time.monotonic() + 60
        while not replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", lsn).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the replica did not replay the checkpoint"
            time.sleep(0.05)
        replica.execute("CHECKPOINT")


@contextmanager
def replica_stopped() -> Iterator[None]:
    """The replica killed (``pg_ctl stop -m immediate``) for the block, started again afterwards."""
    _restartpoint()
    _pg_ctl("-m", "immediate", "-w", "stop")
    try:
        yield
    finally:
        _pg_ctl("-w", "-t", "300", "start")


@contextmanager
def replay_paused() -> Iterator[None]:
    """The replica stops replaying the primary's log for the block (it still answers, with older data)."""
    assert REPLICA_URL
    with psycopg.connect(REPLICA_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with psycopg.connect(REPLICA_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
