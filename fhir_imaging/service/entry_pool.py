"""Worker processes for the entries of large batch and transaction Bundles (the ``bundle_workers`` setting).

A Bundle of many resources spends most of its CPU on two pure steps: validating each resource, and extracting its
search index rows. Both run in this server process under the GIL, one entry after the other. With ``bundle_workers``
N > 0, a Bundle of at least ``bundle_workers_from`` writing entries sends its resources (as JSON) to a pool of N
processes, started once with the server, before its database transaction and its write lock:

- each resource is validated there (the same validator; the issues come back, and the Bundle refuses or goes on
  exactly as when it validates in this process, in entry order);
- for each entry whose id is known before the transaction (a ``PUT`` to an id; a ``POST`` without ``ifNoneExist``,
  whose new id is drawn now instead of inside the transaction), its index rows are computed (``Indexer.prepare``)
  for the resource as the transaction will write it: its ``urn:uuid:`` and full-URL references rewritten with the
  ids already known.

The transaction itself runs unchanged in this process (conditional entries, references, If-Match, history, every
check). A write takes the rows computed ahead only for the same id and the very content it writes
(``Indexer.usable``, as single creates do): when the transaction resolves something differently (a conditional
reference, a placeholder naming a conditional entry), the write extracts its rows itself. The pool only moves work.

A pool that fails (a worker killed, a result that does not come back within ``bundle_workers_timeout``) does not
fail the request: that Bundle does all its work in this process, and the pool is started afresh for the next one
(after ``FAILURES_IN_A_ROW`` failures in a row, it is no longer used).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import orjson

from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.fhir.registry import load_registry
from fhir_imaging.fhir.transaction import needs_rewrite, rewrite_references, scan_references
from fhir_imaging.heap import freeze_loaded
from fhir_imaging.search.index import Indexer, Prepared
from fhir_imaging.validation import Validator, has_errors

log = logging.getLogger(__name__)

FAILURES_IN_A_ROW = 3  # then the workers are not started again: every Bundle is processed in the server process
CHUNKS_PER_WORKER = 2  # a Bundle's entries are sent in this many parts per worker (the last part waits least)


@dataclass(frozen=True, slots=True)
class Work:
    """One entry's resource (JSON) and the id it will be written with, when known before the transaction."""

    body: bytes
    resource_id: str | None


@dataclass(frozen=True, slots=True)
class Done:
    """What a worker made of a ``Work``: the validator's issues, and the index rows (None: not computed, because the
    id is not known yet or the resource has errors)."""

    issues: list[Issue]
    prepared: Prepared | None


# -- in the worker processes -----------------------------------------------------------------------------------------

_WORKER: tuple[Validator, Indexer] | None = None


def _start_worker() -> None:
    global _WORKER
    _WORKER = (Validator.load(), Indexer(load_registry()))
    freeze_loaded()  # the definitions stay out of the collector's walks (fhir_imaging/heap.py)


def _ready() -> bool:
    return _WORKER is not None


def work_on(validator: Validator, indexer: Indexer, items: Sequence[Work], mapping: dict[str, str]) -> list[Done]:
    """Validate each resource; index those whose id is known, with ``mapping`` (placeholder or full URL → Type/id)
    applied to their references as the transaction applies it."""
    done = []
    for item in items:
        resource = orjson.loads(item.body)
        issues = validator.validate(resource)
        prepared = None
        if item.resource_id is not None and not has_errors(issues):
            if needs_rewrite(item.body, scan_references(item.body), mapping):
                rewrite_references(resource, mapping)
            prepared = indexer.prepare(item.resource_id, resource)
        done.append(Done(issues, prepared))
    return done


def _work_in_worker(items: list[Work], mapping: dict[str, str]) -> list[Done]:
    assert _WORKER is not None
    return work_on(*_WORKER, items, mapping)


# -- in the server process -------------------------------------------------------------------------------------------


class EntryPool:
    """``workers`` processes, started by ``start`` (once, with the server) and again after a failure."""

    def __init__(self, workers: int, smallest: int, timeout: float) -> None:
        self.workers = workers
        self.smallest = max(1, smallest)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.failures = 0  # times the pool failed and was replaced
        self._in_a_row = 0  # failures since the last Bundle the pool processed

    def start(self) -> None:
        """Start the processes now, without waiting for them to load the definitions."""
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: the server process runs threads by now, which a forked child must not inherit half-held
        pool = ProcessPoolExecutor(self.workers, get_context("spawn"), initializer=_start_worker)
        for _ in range(self.workers):
            pool.submit(_ready)
        return pool

    def pays_for(self, count: int) -> bool:
        """Whether a Bundle with ``count`` resources to write goes through the pool (not once it failed
        ``FAILURES_IN_A_ROW`` times in a row)."""
        return count >= self.smallest and self._in_a_row < FAILURES_IN_A_ROW

    def submit(self, items: list[Work], mapping: dict[str, str]) -> Ahead | None:
        """Send ``items`` to the workers, in parts; None when the pool failed at once (the caller does the work
        itself)."""
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
            pool = self._pool
        size = math.ceil(len(items) / (self.workers * CHUNKS_PER_WORKER))
        futures: list[Future[list[Done]]] = []
        try:
            for start in range(0, len(items), size):
                futures.append(pool.submit(_work_in_worker, items[start : start + size], mapping))
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            for future in futures:
                future.cancel()
            self._replace(pool, exc)
            return None
        return Ahead(self, pool, futures, size, time.monotonic() + self.timeout)

    def _succeeded(self) -> None:
        self._in_a_row = 0

    def _replace(self, pool: ProcessPoolExecutor, exc: BaseException) -> None:
        """A failed pool is shut down (its processes killed: one may hang); the next Bundle starts a new one."""
        log.warning("bundle worker processes failed (%r): this Bundle is processed in the server process", exc)
        with self._lock:
            if self._pool is not pool:
                return  # another request replaced it already
            self._pool = None
            self.failures += 1
            self._in_a_row += 1
            if self._in_a_row >= FAILURES_IN_A_ROW:
                log.error("bundle worker processes failed %d times in a row: no longer used", self._in_a_row)
        _kill(pool)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class Ahead:
    """One Bundle's items in the workers: each item's ``Done`` once its part has come back (waited for when asked),
    or None once the pool failed (timed out included): the caller then does that item's work itself."""

    def __init__(
        self,
        pool: EntryPool,
        executor: ProcessPoolExecutor,
        futures: list[Future[list[Done]]],
        size: int,
        deadline: float,
    ) -> None:
        self.pool = pool
        self.executor = executor
        self.futures = futures
        self.size = size
        self.deadline = deadline
        self.parts: list[list[Done] | None] = [None] * len(futures)
        self.failed = False

    def get(self, position: int) -> Done | None:
        part = position // self.size
        results = self.parts[part]
        if results is None:
            if self.failed:
                return None
            try:
                results = self.futures[part].result(timeout=max(0.0, self.deadline - time.monotonic()))
            except (BrokenProcessPool, FutureTimeout, OSError, RuntimeError) as exc:
                self.failed = True
                for future in self.futures:
                    future.cancel()
                self.pool._replace(self.executor, exc)
                return None
            self.parts[part] = results
            if all(done is not None for done in self.parts):
                self.pool._succeeded()
        return results[position - part * self.size]

    def received(self) -> int:
        """How many items' results have come back (and been asked for)."""
        return sum(len(done) for done in self.parts if done is not None)


def _kill(pool: ProcessPoolExecutor) -> None:
    processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
    for process in processes.values():
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
