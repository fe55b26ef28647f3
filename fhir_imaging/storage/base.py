"""The Store protocol: versioned FHIR resources, written and read in whole transactions.

Spec: https://hl7.org/fhir/R4/http.html (versioning, history, delete semantics)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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
    seq: int = 0  # position in the server-wide history (for stable history paging)

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
    at_or_before_seq: int | None = None  # paging cursor: only versions with seq <= this
    count: int = 20


class Transaction(Protocol):
    """Reads and writes inside one open database transaction (see ``Store.transact``)."""

    def read(self, resource_type: str, resource_id: str) -> Version | None: ...

    def lock(self, key: str) -> None:
        """Hold a lock on ``key`` until the transaction ends."""

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult: ...

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult: ...

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None: ...


class Store(Protocol):
    """What the API needs from a backend. Every method is one database transaction."""

    reads_inline: bool  # point reads are cheap enough to run on the event loop

    def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (a deletion marker when deleted), or None when it never existed."""

    def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None: ...

    def create(self, resource_type: str, resource_id: str, resource: dict[str, Any]) -> WriteResult: ...

    def update(
        self, resource_type: str, resource_id: str, resource: dict[str, Any], if_match: int | None = None
    ) -> WriteResult:
        """A new version, or the first when the id is new; If-Match mismatch raises PreconditionFailed."""

    def delete(self, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
        """Mark deleted (a new version); None when there was nothing to delete."""

    def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
        """Newest first, at most ``query.count``; also the cursor of the next page (None on the last page)."""

    def count_versions(self, resource_type: str, resource_id: str) -> int: ...

    def transact(self, work: Callable[[Any], T]) -> T:
        """Run ``work(transaction)`` in one database transaction: all of its writes commit, or none."""

    dialect: Any  # the SQL dialect fhir_imaging.search compiles for: "sqlite", "postgres" (or an object with .name)

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement compiled by fhir_imaging.search (values bound, never spliced)."""

    def reindex(self) -> int:
        """Rebuild every search index from the stored current versions; the number of resources indexed."""

    def close(self) -> None: ...
