"""What every PostgreSQL connection pool of the server shares (the primary's, each replica's): how a pooled
connection is checked before it is handed out.

A pool that checked every connection it hands out (``ConnectionPool.check_connection``: an empty query) would add a
round trip to every unit of work — a point read would cost two. ``IdleCheck`` checks only a connection that has not
been handed out for ``CHECK_IDLE_S`` seconds: one that was just in use is known to work (had it broken, the pool would
have discarded it on its return, seeing it closed), and one idle in the pool across a database restart is found dead
and replaced before any request uses it. ``AsyncIdleCheck`` is the same for the asynchronous pool of point reads.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

CHECK_IDLE_S = 1.0  # a pooled connection unused for longer is checked (a round trip) before it is handed out


class _IdleTimes:
    """When each connection of a pool was last handed out: whether it is due for a check."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.checks = 0  # round trips spent on checks (for tests)
        self._handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def due(self, conn: Any) -> bool:
        """Whether ``conn``, about to be handed out, must be checked first (it has been idle too long)."""
        now = time.monotonic()
        idle = now - self._handed_out.get(conn, -math.inf)
        self._handed_out[conn] = now
        if idle > self.idle_s:
            self.checks += 1
            return True
        return False


class IdleCheck(_IdleTimes):
    """The ``check`` callback of a pool: ``check_connection`` for a connection idle more than ``idle_s`` seconds."""

    def __init__(self, idle_s: float = CHECK_IDLE_S) -> None:
        super().__init__(idle_s)

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if self.due(conn):
            ConnectionPool.check_connection(conn)


class AsyncIdleCheck(_IdleTimes):
    """``IdleCheck`` for an ``AsyncConnectionPool``."""

    def __init__(self, idle_s: float = CHECK_IDLE_S) -> None:
        super().__init__(idle_s)

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.due(conn):
            await AsyncConnectionPool.check_connection(conn)
