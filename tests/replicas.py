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
        if time.monotonic() >= deadline:
            state = [(r.usable, r.replayed, r.lag) for r in replicas.replicas]
            pytest.fail(f"the replica checker did not get there in time: {state}; {replica_diagnosis()}")
        replicas.wait_checked(timeout=timeout)


def wait_usable(store: Store, usable: bool = True) -> None:
    replicas = replicas_of(store)
    wait_until(lambda: replicas.replicas[0].usable is usable, replicas)


def replica_served(store: Store) -> int:
    return replicas_of(store).replicas[0].reads


def replica_caught_up(timeout: float = 30.0) -> None:
    """After a test stopped and started the primary: wait until the replica has replayed the primary's position,
    restarting the replica once if it has not within ``timeout`` seconds; the replica tests that follow need it
    streaming (a primary stopped for long left the replica of one CI run not replaying again)."""
    assert POSTGRES_URL and REPLICA_URL
    for attempt in range(2):
        if _replayed_primary(timeout):
            return
        if attempt == 0:
            _pg_ctl("-m", "fast", "-w", "-t", "300", "restart")
    pytest.fail(f"the replica did not catch up with the restarted primary: {replica_diagnosis()}")


def _replayed_primary(timeout: float) -> bool:
    assert POSTGRES_URL and REPLICA_URL
    with psycopg.connect(POSTGRES_URL, autocommit=True) as primary:
        target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(REPLICA_URL, autocommit=True, connect_timeout=2) as replica:
                row = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target[0]) if target else "0/0",)
                ).fetchone()
            if row and row[0]:
                return True
        except psycopg.OperationalError:
            pass  # still starting
        time.sleep(0.2)
    return False


def replica_diagnosis() -> str:
    """What the primary and the replica say of their streaming, and the replica log's last lines (for failures)."""
    parts = []
    for name, url, query in (
        ("primary (state, sent, replayed)", POSTGRES_URL,
         "SELECT state, sent_lsn, replay_lsn FROM pg_stat_replication"),
        ("replica (paused, replayed, receiver)", REPLICA_URL,
         "SELECT pg_is_wal_replay_paused(), pg_last_wal_replay_lsn(), (SELECT status FROM pg_stat_wal_receiver)"),
    ):  # fmt: skip
        try:
            with psycopg.connect(url or "", autocommit=True, connect_timeout=2) as conn:
                parts.append(f"{name}: {conn.execute(query).fetchall()}")
        except psycopg.Error as exc:
            parts.append(f"{name}: {type(exc).__name__}: {exc}".strip())
    words = shlex.split(REPLICA_PG_CTL or "")
    if "-l" in words and words.index("-l") + 1 < len(words):
        try:
            with open(words[words.index("-l") + 1], encoding="utf-8", errors="replace") as log:
                parts.append("replica log: " + " | ".join(line.strip() for line in log.readlines()[-12:]))
        except OSError:
            pass
    return "; ".join(parts)


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
