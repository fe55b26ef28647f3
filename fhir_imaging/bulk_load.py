"""``fhir-imaging load --database``: loose resources (NDJSON lines, the entries of collection Bundles, single
resource files) written in bulk, straight to the database, with what the FHIR API would have made of them.

Each resource is checked as the API checks a ``PUT [type]/[id]`` (with an id) or ``POST [type]`` (without) entry of
the transaction Bundles the API path sends: the same validator, the same refusals, reported with its file and line
and skipped. In worker processes (``--load-workers``): parse, validate, stamp as a first version, serialise and
compress the body, extract the index rows (``Indexer.statements``). In this process: write them in order, one
database transaction per batch, one ``executemany`` (PostgreSQL: ``COPY``) per table (storage/bulk.py); a resource
that exists gets its next version, as an update would make it.

What the bulk path does not do goes through the API, in file order: transaction and batch Bundles, and resources
whose references must be resolved (conditional ``Type?criteria`` or ``urn:uuid:`` ones). A batch the database
refuses (a concurrent writer created one of its ids meanwhile) is sent through the API as well. With
``--enforce-references`` or ``--audit-log`` the whole load goes through the API (that check and that trail are the
API's).

Into an empty database, the index tables' value-keyed indexes are built after the load rather than inserted into
row by row at random places (``SqlStore.defer_indexes``, storage/bulk.py): at the end, or as soon as something needs
them (a resource for the API path, whose searches use them; an id written again, whose rows are found through them:
``NotFresh``), from when on the load goes on as into any database. A killed load leaves its committed batches whole
and the statements that build them in the database: the next open that migrates runs them.

SQLite commits the batches without waiting for the disk (``SQLiteStore.relaxed_sync``: a crash keeps every
committed batch whole) and syncs once at the end. PostgreSQL is analysed at the end (``PostgresStore.analyze``), so
that the first searches are planned from statistics of the loaded rows (storage/pgstats.py); SQLite's searches are
steered by the compiler itself (search/execute.py: the probes of broad filters), not by its statistics.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from http import HTTPStatus
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from fhir_imaging.config import usable_cores
from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.fhir.registry import Registry, load_registry
from fhir_imaging.fhir.resource import (
    MAX_JSON_DEPTH,
    format_instant,
    is_valid_id,
    json_depth_exceeds,
    new_id,
    now,
    stamped,
)
from fhir_imaging.fhir.transaction import is_placeholder, scan_references
from fhir_imaging.heap import freeze_loaded
from fhir_imaging.loader import (
    NDJSON_SUFFIXES,
    Failure,
    Item,
    Line,
    Loader,
    PreparedBundle,
    ndjson_lines,
    parse_line,
    read_file,
)
from fhir_imaging.search.index import Indexer
from fhir_imaging.storage.bodies import pack
from fhir_imaging.storage.bulk import NewVersion, NotFresh
from fhir_imaging.validation import Validator, has_errors, status_for

BUNDLE_DEPTH = 3  # levels a resource sits below the top of the Bundle the API path would send it in
MAX_WORKERS = 8


def default_workers() -> int:
    """The cores this process may use, at most ``MAX_WORKERS``."""
    return usable_cores(MAX_WORKERS)


@dataclass(frozen=True, slots=True)
class Prepared:
    source: str
    size: int
    version: NewVersion


Outcome = Prepared | Failure | Item  # an Item: for the API path (its references must be resolved)


class Preparer:
    """A resource → what the bulk path writes, or why the API would refuse it (pure apart from the clock)."""

    def __init__(self, registry: Registry, validator: Validator, placeholder: str) -> None:
        self.registry = registry
        self.validator = validator
        self.indexer = Indexer(registry)
        self.placeholder = placeholder

    def prepare(self, unit: Line | Item) -> Outcome:
        item = parse_line(unit) if isinstance(unit, Line) else unit
        if isinstance(item, Failure):
            return item
        resource = item.resource
        if json_depth_exceeds(resource, MAX_JSON_DEPTH - BUNDLE_DEPTH):
            return Failure(item.source, f"HTTP 400: The JSON nests deeper than {MAX_JSON_DEPTH} levels", item.size)
        resource_type, resource_id = resource["resourceType"], resource.get("id")
        if isinstance(resource_id, str) and resource_id:
            method, url = "PUT", f"{resource_type}/{resource_id}"
        else:
            method, url, resource_id = "POST", resource_type, None
            resource = {key: value for key, value in resource.items() if key != "id"}
        if not self.registry.is_resource_type(resource_type):
            return _refused(item, method, url, 400, f"'{url}' does not start with a resource type")
        if resource_id is not None and not is_valid_id(resource_id):
            return _refused(item, method, url, 400, f"'{resource_id}' is not a valid id")
        issues = self.validator.validate(resource)
        if has_errors(issues):
            return _refused(item, method, url, status_for(issues), *_texts(issues))
        document = stamped(resource, resource_id or new_id(), 1, format_instant(now()))
        body = orjson.dumps(document)
        if any("?" in reference or is_placeholder(reference) for reference in scan_references(body)):
            return item
        version = NewVersion(
            resource_type,
            document["id"],
            method,
            pack(body),
            document["meta"]["lastUpdated"],
            self.indexer.statements(0, document, self.placeholder),
        )
        return Prepared(item.source, item.size, version)

    def prepare_all(self, units: list[Line | Item]) -> list[Outcome]:
        return [self.prepare(unit) for unit in units]


def _texts(issues: list[Issue]) -> list[str]:
    return [issue.diagnostics for issue in issues if issue.severity in ("error", "fatal")]


def _refused(item: Item, method: str, url: str, status: int, *texts: str) -> Failure:
    """What the API path reports for an entry it refuses."""
    reason = "; ".join(f"({method} {url}): {text}" for text in texts)
    return Failure(item.source, f"{status} {HTTPStatus(status).phrase}: {reason}", item.size)


# -- worker processes ------------------------------------------------------------------------------------------------

_PREPARER: Preparer | None = None


def _start_worker(placeholder: str) -> None:
    global _PREPARER
    _PREPARER = Preparer(load_registry(), Validator.load(), placeholder)
    freeze_loaded()  # the definitions stay out of the collector's walks (fhir_imaging/heap.py)


def _prepare_in_worker(units: list[Line | Item]) -> list[Outcome]:
    assert _PREPARER is not None
    return _PREPARER.prepare_all(units)


class _InProcess(Executor):
    """``--load-workers 1``: the work done at once, in this process."""

    def __init__(self, placeholder: str) -> None:
        self.preparer = Preparer(load_registry(), Validator.load(), placeholder)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(self.preparer.prepare_all(*args))
        return future


def preparers(workers: int, placeholder: str) -> Executor:
    """Where resources are prepared: ``workers`` processes (forked when this process runs no other thread yet, so
    they start with the definitions loaded), or this process for 1."""
    if workers <= 1:
        return _InProcess(placeholder)
    method = "fork" if threading.active_count() == 1 else "spawn"
    load_registry()
    pool = ProcessPoolExecutor(workers, get_context(method), initializer=_start_worker, initargs=(placeholder,))
    pool.submit(int).result()  # start them now (all at once), before this process starts threads
    return pool


# -- the load --------------------------------------------------------------------------------------------------------


def _units(path: Path) -> Iterator[Line | Item | Failure | PreparedBundle]:
    if path.suffix.lower() in NDJSON_SUFFIXES:
        yield from ndjson_lines(path)
    else:
        yield from read_file(path)


class BulkLoader:
    """Loads files as ``Loader`` does, writing loose resources in bulk to ``store`` (the in-process app's, which
    ``api`` reaches through the API)."""

    def __init__(self, api: Loader, store: Any, executor: Executor, batch_size: int, depth: int) -> None:
        self.api = api
        self.store = store
        self.executor = executor
        self.batch_size = batch_size
        self.depth = max(1, depth)  # batches handed to the workers ahead of the one being written
        self.summary = api.summary
        self._inflight: deque[tuple[list[Line | Item], Future[list[Outcome]]]] = deque()
        self.deferred = False  # the database was empty: its value-keyed indexes are built at the end

    async def load(self, files: list[Path]) -> Any:
        relaxed = getattr(self.store, "relaxed_sync", None)
        with relaxed() if relaxed is not None else nullcontext():
            defer = getattr(self.store, "defer_indexes", None)
            self.deferred = bool(defer()) if defer is not None else False
            try:
                await self._load(files)
            finally:
                await self._build_indexes()
        analyze = getattr(self.store, "analyze", None)
        if analyze is not None and self.summary.loaded:  # PostgreSQL: statistics for the planner (storage/pgstats.py)
            await asyncio.to_thread(analyze)
        return self.summary

    async def _build_indexes(self) -> None:
        """The deferred indexes built (before anything goes through the API, whose searches need them, and before a
        resource is written again, whose rows are found through them; at the latest at the end)."""
        if self.deferred:
            self.deferred = False
            self.store.build_indexes()

    async def _load(self, files: list[Path]) -> None:
        for path in files:
            self.summary.files += 1
            pending: list[Line | Item] = []
            for unit in _units(path):
                if isinstance(unit, Failure):
                    self.summary.failed.append(unit)
                    self.api._advance(unit.size)
                elif isinstance(unit, PreparedBundle):
                    await self._submit(pending)
                    pending = []
                    await self._drain()
                    await self._build_indexes()
                    await self.api._send_bundle(unit)
                else:
                    pending.append(unit)
                    if len(pending) >= self.batch_size:
                        await self._submit(pending)
                        pending = []
            await self._submit(pending)
        await self._drain()

    async def _submit(self, units: list[Line | Item]) -> None:
        if not units:
            return
        while len(self._inflight) >= self.depth:
            await self._write_next()
        self._inflight.append((units, self.executor.submit(_prepare_in_worker, units)))

    async def _drain(self) -> None:
        while self._inflight:
            await self._write_next()

    async def _write_next(self) -> None:
        units, future = self._inflight.popleft()
        outcomes = await asyncio.wrap_future(future)
        group: list[tuple[Line | Item, Prepared]] = []
        keys: set[tuple[str, str]] = set()
        for unit, outcome in zip(units, outcomes, strict=True):
            if isinstance(outcome, Prepared):
                key = (outcome.version.resource_type, outcome.version.id)
                if key in keys:  # the same id twice: the second is an update of the first
                    await self._write(group)
                    group, keys = [], set()
                group.append((unit, outcome))
                keys.add(key)
            elif isinstance(outcome, Failure):
                self.summary.failed.append(outcome)
                self.api._advance(outcome.size)
            else:
                await self._write(group)
                group, keys = [], set()
                await self._build_indexes()
                await self.api._send_items([outcome])
        await self._write(group)

    async def _write(self, group: list[tuple[Line | Item, Prepared]]) -> None:
        if not group:
            return
        versions = [prepared.version for _, prepared in group]
        try:
            fresh = self.deferred
            try:
                self.store.transact(lambda tx: tx.write_many(versions, fresh))
            except NotFresh:  # an id loaded before: its rows are found through the indexes, built first
                await self._build_indexes()
                self.store.transact(lambda tx: tx.write_many(versions))
        except Exception:  # the database refused the batch (nothing of it was written): the API path decides
            items = [unit if isinstance(unit, Item) else parse_line(unit) for unit, _ in group]
            await self.api._send_items([item for item in items if isinstance(item, Item)])
            return
        self.summary.loaded += len(group)
        self.api._advance(sum(prepared.size for _, prepared in group))


def bulk_context(executor: Executor) -> AbstractContextManager[Any]:
    """Shuts the worker processes down at the end."""
    if isinstance(executor, ProcessPoolExecutor):
        return executor
    return nullcontext()
