"""Read replicas, the I/O part: one connection pool per replica, and a thread that checks them.

Every ``interval`` seconds (never per request) the checker reads the primary's LSN, then each replica's replayed LSN
over a connection of its own (connect timeout ``CONNECT_TIMEOUT_S``): a replica that answers, is in recovery and
trails by at most ``max_lag`` seconds (``routing.LagTracker``) is usable; one that is down, lags or was promoted is
skipped until a later check finds it healthy again. A read that fails on a replica because the connection broke
marks it down at once (``PostgresStore`` then runs the read on the primary). A replica coming back gets a fresh
pool: the old one may still be backing off from its failed reconnection attempts.

Reads by id on a replica wait on the server's event loop, as on the primary: each replica also has a small pool of
asynchronous connections (``point_reads``), made on the loop when first needed and made afresh, the old one closed
in the background, once the checker has given the replica a fresh pool (``Replica.generation``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from fhir_imaging.logs import redact_url
from fhir_imaging.storage.pgpool import AsyncIdleCheck, IdleCheck
from fhir_imaging.storage.routing import LagTracker

log = logging.getLogger("fhir_imaging.replicas")
CONNECT_TIMEOUT_S = 2  # a replica that does not answer within this is down (libpq's shortest useful timeout)
POOL_TIMEOUT_S = 1.0  # longest wait for a pooled replica connection before the read goes to the primary
REPLAYED = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
PRIMARY_LSN = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"


def primary_lsn(conn: psycopg.Connection[Any]) -> int:
    """The primary's current WAL position, on ``conn``."""
    row = conn.execute(PRIMARY_LSN).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(eq=False)
class Replica:
    """One replica: its pool, and what its last check found."""

    name: str  # its URL without the password, for logs
    pool: ConnectionPool
    usable: bool = False
    replayed: int = -1  # the LSN it had replayed at its last check (-1: unknown)
    lag: float | None = None  # seconds it trailed the primary at most, at its last check (None: unknown)
    reads: int = 0  # units of reads it served
    generation: int = 0  # how many times the checker gave it a fresh pool
    _probe: psycopg.Connection[Any] | None = field(default=None, repr=False)
    _point_reads: tuple[int, AsyncConnectionPool] | None = field(default=None, repr=False)  # (generation, pool)


class ReplicaSet:
    """The replicas of one store, checked by a thread of their own; ``choose`` picks one for a unit of reads."""

    def __init__(
        self,
        urls: Sequence[str],
        primary_lsn: Callable[[], int],
        max_lag: float,
        interval: float,
        pool_size: int,
        connection_options: str,
        point_reads_size: int = 1,
    ) -> None:
        self.max_lag = max_lag
        self.interval = interval
        self._primary_lsn = primary_lsn
        self._options = connection_options
        self._urls = list(urls)
        self._tracker = LagTracker(max_lag + 2 * interval)
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._checked = threading.Condition()
        self.checks = 0  # rounds of checks done
        self._pool_size = max(1, pool_size - point_reads_size)
        self._point_reads_size = point_reads_size
        self._closing: set[asyncio.Task[None]] = set()  # asynchronous pools being closed in the background
        self.replicas = [Replica(redact_url(url), self._new_pool(url)) for url in urls]
        self._thread = threading.Thread(target=self._loop, name="replica-checker", daemon=True)
        self._thread.start()

    def _kwargs(self) -> dict[str, Any]:
        return {"connect_timeout": CONNECT_TIMEOUT_S, "options": self._options, "autocommit": True}

    def _new_pool(self, url: str) -> ConnectionPool:
        return ConnectionPool(
            url,
            min_size=0,  # no connection is kept (nor reconnected in the background) while it is unused
            max_size=self._pool_size,
            timeout=POOL_TIMEOUT_S,
            kwargs=self._kwargs(),
            check=IdleCheck(),
            open=True,
        )

    async def point_reads(self, replica: Replica) -> AsyncConnectionPool:
        """The pool of ``replica``'s reads by id, on the running event loop: made when first needed, and made afresh
        once the replica came back (the old one is closed in the background)."""
        current = replica._point_reads
        if current is not None and current[0] == replica.generation:
            return current[1]
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self._urls[self.replicas.index(replica)],
            min_size=0,
            max_size=self._point_reads_size,
            timeout=POOL_TIMEOUT_S,
            kwargs=self._kwargs(),
            check=AsyncIdleCheck(),
            open=False,
        )
        await pool.open(wait=False)
        replica._point_reads = (replica.generation, pool)
        if current is not None:
            self._close_later(current[1])
        return pool

    def _close_later(self, pool: AsyncConnectionPool) -> None:
        task = asyncio.get_running_loop().create_task(pool.close(timeout=POOL_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_point_reads(self) -> None:
        """Close every replica's pool of reads by id (on the loop that made them, before ``close``)."""
        for replica in self.replicas:
            if replica._point_reads is not None:
                pool, replica._point_reads = replica._point_reads[1], None
                await pool.close(timeout=POOL_TIMEOUT_S)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def choose(self, fence: int) -> Replica | None:
        """A usable replica that has replayed ``fence`` (in turn, when several have), else None (the primary)."""
        ready = [replica for replica in self.replicas if replica.usable and replica.replayed >= fence]
        if not ready:
            return None
        return ready[next(self._turn) % len(ready)]

    def states(self) -> list[dict[str, Any]]:
        """What the checks found, replica by replica (no address: ``/readyz`` shows it to anyone)."""
        return [
            {"usable": replica.usable, "lag": None if replica.lag is None else round(replica.lag, 3)}
            for replica in self.replicas
        ]

    def mark_down(self, replica: Replica, reason: str) -> None:
        if replica.usable:
            log.warning("read replica %s skipped: %s", replica.name, reason)
        replica.usable = False

    def wait_checked(self, rounds: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``rounds`` more rounds of checks are done (for tests and start-up); False on timeout."""
        with self._checked:
            target = self.checks + rounds
            return self._checked.wait_for(lambda: self.checks >= target, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CONNECT_TIMEOUT_S + 1)
        for replica in self.replicas:
            if replica._probe is not None:
                replica._probe.close()
            replica.pool.close()

    # -- the checks -------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a check never ends the checker
                log.exception("read replica check failed")
            with self._checked:
                self.checks += 1
                self._checked.notify_all()
            if self._stop.wait(self.interval):
                return

    def check(self) -> None:
        """One round: the primary's LSN, then each replica's; each replica is judged usable or not."""
        try:
            primary = self._primary_lsn()
        except Exception as exc:
            for replica in self.replicas:  # how far they trail cannot be known: the primary answers (or fails)
                self.mark_down(replica, f"the primary's position cannot be read ({type(exc).__name__})")
            return
        at = time.monotonic()
        self._tracker.note(at, primary)
        for replica, url in zip(self.replicas, self._urls, strict=True):
            self._check(replica, url, at)

    def _check(self, replica: Replica, url: str, at: float) -> None:
        try:
            if replica._probe is None or replica._probe.closed:
                replica._probe = psycopg.connect(
                    url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=self._options
                )
            row = replica._probe.execute(REPLAYED).fetchone()
        except psycopg.Error as exc:
            if replica._probe is not None:
                replica._probe.close()
                replica._probe = None
            replica.replayed, replica.lag = -1, None
            self.mark_down(replica, f"it cannot be reached ({type(exc).__name__})")
            return
        assert row is not None
        in_recovery, replayed = bool(row[0]), row[1]
        if not in_recovery or replayed is None:
            replica.replayed, replica.lag = -1, None
            self.mark_down(replica, "it is not replaying the primary's log (promoted, or not a replica)")
            return
        replica.replayed = int(replayed)
        replica.lag = self._tracker.lag(replica.replayed, at)
        if replica.lag > self.max_lag:
            self.mark_down(replica, f"it trails the primary by more than {self.max_lag:g} s")
        elif not replica.usable:
            log.info("read replica %s in use (trails the primary by at most %.1f s)", replica.name, replica.lag)
            old, replica.pool = replica.pool, self._new_pool(url)
            replica.generation += 1
            replica.usable = True
            old.close(timeout=POOL_TIMEOUT_S)  # a read still holding one of its connections fails over to the primary
