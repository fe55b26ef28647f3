"""Read replicas, the pure part: which reads a replica may serve, read-your-writes, and how far a replica trails.

A PostgreSQL streaming replica replays the primary's write-ahead log (WAL), so its state is the primary's at some
earlier log position (LSN). Two questions decide whether a read may go to it:

- Has it replayed what this client wrote? Every commit made for a request is noted in the request's ``Session``
  (``pg_current_wal_lsn()`` after the commit); the response hands it to the client as a consistency token
  (api/consistency.py), which the client's next requests carry back. A replica serves such a read only when its
  replayed LSN (``pg_last_wal_replay_lsn()``, as of its last check) is at least the token's, else the primary does.
- Does it trail the primary by more than ``--replica-max-lag`` seconds? ``LagTracker`` keeps the primary's LSN as
  sampled at each check; a replica that has replayed the sample taken at time t is at most ``now - t`` behind. (The
  replay timestamp, ``now() - pg_last_xact_replay_timestamp()``, would grow without end on an idle primary, when
  there is nothing to replay.)

Spec: https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-RECOVERY-INFO-TABLE
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

MAX_LSN = 2**64 - 1  # what an unreadable token asks for: no replica has replayed it, so the primary answers
_MOST_HEX_DIGITS = 8  # each half of an LSN's text form ('16/B374D848') is a 32-bit number


@dataclass(slots=True)
class Session:
    """What one request (or one background job) needs of a replica: ``after`` is the LSN its consistency token
    names, ``written`` the LSN after its own latest commit (0: none), noted unless ``follow_writes`` is off."""

    after: int = 0
    written: int = 0
    follow_writes: bool = True

    @property
    def fence(self) -> int:
        """The LSN a replica must have replayed to serve this session's reads."""
        return max(self.after, self.written)

    def note_commit(self, lsn: int) -> None:
        if self.follow_writes:
            self.written = max(self.written, lsn)


SESSION: ContextVar[Session | None] = ContextVar("fhir_imaging_replica_session", default=None)


@contextmanager
def session(after: int = 0, follow_writes: bool = True) -> Iterator[Session]:
    """Run the block as one session: the store notes its commits in it and routes its reads by its fence."""
    current = Session(after, follow_writes=follow_writes)
    token = SESSION.set(current)
    try:
        yield current
    finally:
        SESSION.reset(token)


def parse_lsn(text: str) -> int | None:
    """``'16/B374D848'`` → the 64-bit log position; None for anything else (bounded: at most 17 characters)."""
    if len(text) > 2 * _MOST_HEX_DIGITS + 1:
        return None
    high, slash, low = text.partition("/")
    if not slash or not _is_hex(high) or not _is_hex(low):
        return None
    return (int(high, 16) << 32) | int(low, 16)


def _is_hex(text: str) -> bool:
    return 0 < len(text) <= _MOST_HEX_DIGITS and all(char in "0123456789abcdefABCDEF" for char in text)


def format_lsn(lsn: int) -> str:
    """The text form PostgreSQL writes: ``'16/B374D848'``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def fence_of(token: str | None) -> int:
    """The LSN a client's consistency token asks for: 0 without one, ``MAX_LSN`` (the primary) for one that does not
    parse — a read that might have to see the client's writes is never sent where it cannot."""
    if not token:
        return 0
    lsn = parse_lsn(token.strip())
    return MAX_LSN if lsn is None else lsn


class LagTracker:
    """The primary's LSN at each check of the last ``horizon`` seconds: how far behind a replica is."""

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic time, primary LSN), oldest first

    def note(self, at: float, primary_lsn: int) -> None:
        self._samples.append((at, primary_lsn))
        while self._samples and self._samples[0][0] < at - self.horizon:
            self._samples.popleft()

    def lag(self, replayed: int, at: float) -> float:
        """Seconds a replica that has replayed up to ``replayed`` trails the primary at most: 0 when it has replayed
        the latest sample; ``now - t`` for the latest sample (taken at t) it has replayed; infinite when it has
        replayed none (it trails by more than the horizon, or nothing is known yet)."""
        newest_replayed: float | None = None
        for taken, lsn in self._samples:
            if lsn > replayed:
                break
            newest_replayed = taken
        else:
            return 0.0
        return math.inf if newest_replayed is None else at - newest_replayed
