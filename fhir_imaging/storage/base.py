"""The Store protocol: versioned FHIR resources, written and read in whole transactions.

Spec: https://hl7.org/fhir/R4/http.html (versioning, history, delete semantics)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fhir_imaging.storage.dialect import Dialect

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource. ``body`` is the stored JSON, ``None`` for a deletion."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    method: str  # POST | PUT | DELETE (the interaction that made this version)
    body: bytes | None
    seq: int = 0  # position in the server-wide history (for stable history paging) ...
    tx: int = 0  # ... after the commit order of its transaction (storage/history.py): the order is (tx, seq)

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    created: bool  # a new resource (201) rather than a new version of an existing one


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    resource_type: str | None = None
    id: str | None = None
    since: str | None = None  # instant, inclusive
    at_or_before: tuple[int, int] | None = None  # paging cursor: only versions at or before this (tx, seq)
    count: int = 20


class Reader(Protocol):
    """The reads of one unit of work, on one database connection (``Store.reading`` or ``Store.transact``)."""

    dialect: Dialect

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (a deletion marker when deleted), or None when it never existed."""

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None: ...

    def history(self, query: HistoryQuery) -> tuple[list[Version], tuple[int, int] | None]:
        """Newest first, at most ``query.count``; also the cursor of the next page (None on the last page). Type and
        system histories end at the visibility horizon (storage/history.py)."""

    def count_versions(self, resource_type: str, resource_id: str) -> int: ...

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement compiled by fhir_imaging.search (values bound, never spliced), bounded by
        the search timeout."""


class Transaction(Reader, Protocol):
    """The reads and writes of one open write transaction (``Store.transact``): its reads see its own writes, and
    every write maintains the search index rows in the same transaction."""

    def lock(self, key: str) -> None:
        """Hold a lock on ``key`` until the transaction ends."""

    def create(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], prepared: Any = None
    ) -> WriteResult:
        """``prepared``: ``Store.prepare`` of this id and content (else the work is done here)."""

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        if_match: int | None = None,
        prepared: Any = None,
    ) -> WriteResult:
        """A new version, or the first when the id is new; If-Match mismatch raises PreconditionFailed."""

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        """Mark deleted (a new version); None when there was nothing to delete."""

    def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement on a table a module keeps for itself (export jobs), written with ``?``
        placeholders; the number of rows it changed."""

    def server_key(self, make: Callable[[], bytes]) -> bytes:
        """The PEM key this server signs access tokens with: the stored one, else ``make()``'s, stored."""

    def spend_assertion(self, client_id: str, jti: str, expires: float) -> bool:
        """Record a client assertion's ``jti`` until ``expires``: True the first time, False when it was spent
        before (a replay). Expired records are dropped."""


class Store(Protocol):
    """A backend: units of work over explicit ``Reader`` / ``Transaction`` objects. The one-statement methods
    (``read`` … ``delete``) are shorthands for a unit of work of one step."""

    dialect: Dialect
    reads_inline: bool  # point reads are cheap enough to run on the event loop
    schema_found: int  # the schema version the database had when the store was opened (before migrating)

    def reading(self, work: Callable[[Reader], T], replica: bool = False) -> T:
        """Run ``work(reader)`` on one connection (PostgreSQL: in one transaction; SQLite: each statement reads the
        latest commit). ``replica``: the reads need not see writes other clients made in the last seconds, so a read
        replica may serve them (PostgreSQL with ``--database-replica``; it still sees what this session wrote,
        storage/routing.py). Reads that lead to a write (a patch's, a conditional interaction's) leave it False."""

    def transact(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work(transaction)`` in one database transaction: all of its writes commit, or none."""

    def prepare(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> Any:
        """The pure work of writing ``resource`` as ``resource_id`` (its index rows), done before ``transact`` so
        that it runs outside the write lock; a ``Transaction.create`` / ``update`` of the same id and content takes
        it (of other content, it is ignored)."""

    def read(self, resource_type: str, resource_id: str) -> Version | None: ...

    async def read_async(self, resource_type: str, resource_id: str) -> Version | None:
        """``read`` as the server's event loop awaits it (a read replica may serve it, as ``reading(…,
        replica=True)``): without blocking the loop for a round trip."""

    async def start(self) -> None:
        """Start what the store keeps on the server's event loop (the app's lifespan calls it once the loop runs)."""

    async def stop(self) -> None:
        """Undo ``start``, before ``close``."""

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None: ...

    def history(self, query: HistoryQuery) -> tuple[list[Version], tuple[int, int] | None]: ...

    def count_versions(self, resource_type: str, resource_id: str) -> int: ...

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult: ...

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult: ...

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None: ...

    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild every search index from the stored current versions; the number of resources indexed."""

    def ping(self, timeout: float) -> None:
        """One cheap round trip to the database, within about ``timeout`` seconds; raises when it cannot be made."""

    def replica_states(self) -> list[dict[str, Any]]:
        """Each read replica as its last check found it, in the order configured: ``usable`` (it serves reads) and
        ``lag`` (seconds it trailed the primary at most; None when unknown). Empty without replicas."""

    def close(self) -> None: ...
