"""The export runner: a thread in every server process that claims waiting export jobs (export/jobs.py) and writes
their NDJSON files, and removes the files of jobs cancelled or past ``--export-ttl``.

One job at a time per process. A job reads the database page by page as it was at kick-off (export/snapshot.py),
keeps what its request and its owner's scopes select, and writes ``TYPE-N.ndjson`` files of at most
``--export-file-size`` bytes under ``--export-dir/JOB``. It renews its lease after every page; when the renewal fails
(the job was cancelled, or its lease lapsed and another process took it over) it stops and leaves the files to the
sweeper or to the new runner, which starts the job over in a fresh folder.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

import orjson

from fhir_imaging.export import jobs
from fhir_imaging.export.jobs import Job
from fhir_imaging.export.owner import caller_of
from fhir_imaging.export.snapshot import Row, Snapshot, settled, snapshot_page, snapshot_types
from fhir_imaging.fhir.outcome import FhirError, Issue, operation_outcome
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.query import parse_search
from fhir_imaging.search.shape import shape
from fhir_imaging.service import Bases, Caller, FhirService
from fhir_imaging.storage.routing import SESSION, session
from fhir_imaging.storage.sqlstore import SqlReader, SqlStore

log = logging.getLogger("fhir_imaging.export")

POLL = 1.0  # seconds between looks for a waiting job
SWEEP_EVERY = 30.0  # seconds between removals of expired jobs' files
FILTER_PAGE = 1000
COMPLAINT_EVERY = 60.0  # seconds between two warnings that the job table cannot be read
REPLICA_WAIT = 5.0  # seconds an export waits for a read replica to replay its snapshot, else the primary serves
SETTLE_POLL = 0.2  # seconds between looks at whether the writes in flight at a kick-off have ended


class Stopped(Exception):
    """The job is no longer this runner's (cancelled, taken over) or the server is stopping."""


@dataclass
class _Output:
    """The files of one resource type: the open one, and those done (name, count)."""

    resource_type: str
    folder: Path
    limit: int
    done: list[tuple[str, int]] = field(default_factory=list)
    _file: IO[bytes] | None = None
    _name: str = ""
    _count: int = 0
    _size: int = 0

    def write(self, line: bytes) -> None:
        if self._file is None or (self._size and self._size + len(line) > self.limit):
            self.close()
            self._name = f"{self.resource_type}-{len(self.done) + 1}.ndjson"
            self._file = open(self.folder / self._name, "wb")  # noqa: SIM115 - closed by close()
            self._count = self._size = 0
        self._file.write(line)
        self._count += 1
        self._size += len(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self.done.append((self._name, self._count))
            self._file = None


class ExportRunner:
    """Runs export jobs for one server process (thread-safe start/stop)."""

    def __init__(
        self,
        service: FhirService,
        directory: Path,
        ttl: float,
        file_size: int,
        requires_token: bool,
        lease: float = 30.0,
    ) -> None:
        self.service = service
        self.directory = directory
        self.ttl = ttl
        self.file_size = file_size
        self.requires_token = requires_token
        self.lease = lease
        self.worker = f"{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self._last_complaint = 0.0

    @property
    def store(self) -> SqlStore:
        store = self.service.store
        assert isinstance(store, SqlStore)
        return store

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="export-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """A job was just created: look for it now rather than at the next poll."""
        self._wake.set()

    def folder(self, job_id: str) -> Path:
        return self.directory / job_id

    # -- the loop ----------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with session() as claiming:
                job = self._claim()
            if job is not None:
                # Its reads may go to a read replica that has replayed the claim (storage/routing.py); the leases it
                # renews meanwhile do not hold them back.
                with session(claiming.written, follow_writes=False):
                    self.run(job)
                continue
            self._wake.wait(POLL)
            self._wake.clear()

    def _claim(self) -> Job | None:
        """Sweep when it is time, then claim a waiting job (None: there is none, or the job table cannot be read)."""
        try:
            if time.monotonic() - self._last_sweep > SWEEP_EVERY:
                self._last_sweep = time.monotonic()
                self.sweep()
            job_id = self.store.reading(jobs.waiting)
            if not job_id:
                return None
            claimed: Job | None = self.store.transact(
                partial(jobs.claim, job_id=job_id, worker=self.worker, lease=self.lease)
            )
            return claimed
        except Exception as exc:  # the database is down, say: try again at the next poll, quietly
            if time.monotonic() - self._last_complaint > COMPLAINT_EVERY:
                self._last_complaint = time.monotonic()
                log.warning("export runner: the job table cannot be read (%s)", type(exc).__name__)
            return None

    def sweep(self) -> None:
        """Remove the files and records of cancelled jobs and of jobs finished more than ``ttl`` seconds ago."""
        for job_id in self.store.reading(lambda reader: jobs.expired(reader, self.ttl)):
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            self.store.transact(partial(jobs.forget, job_id=job_id))

    def run(self, job: Job) -> None:
        """Run one claimed job to its end: completed, failed, or stopped (cancelled, taken over)."""
        folder = self.folder(job.id)
        shutil.rmtree(folder, ignore_errors=True)  # a job taken over starts again from nothing
        folder.mkdir(parents=True, exist_ok=True)
        try:
            manifest = _Export(self, job, folder).run()
        except Stopped:
            log.info("export %s stopped (cancelled or taken over)", job.id)
            return
        except Exception as exc:
            log.exception("export %s failed", job.id)
            message = exc.issues[0].diagnostics if isinstance(exc, FhirError) and exc.issues else "internal error"
            manifest = {"error": message}
            self.store.transact(lambda tx: jobs.finish(tx, job.id, self.worker, "failed", manifest))
            return
        if not self.store.transact(lambda tx: jobs.finish(tx, job.id, self.worker, "completed", manifest)):
            log.info("export %s was cancelled as it completed", job.id)

    def renew(self, job: Job, progress: str) -> None:
        if self._stop.is_set():
            raise Stopped
        if not self.store.transact(lambda tx: jobs.renew(tx, job.id, self.worker, self.lease, progress)):
            raise Stopped


class _Export:
    """One run of one job."""

    def __init__(self, runner: ExportRunner, job: Job, folder: Path) -> None:
        self.runner = runner
        self.service = runner.service
        self.job = job
        self.folder = folder
        self.caller: Caller = caller_of(job.owner)
        self.bases = Bases.of(job.base)
        self.exported = 0
        self.snapshot = Snapshot(job.snapshot_seq, job.snapshot_tx)

    def run(self) -> dict[str, Any]:
        request = self.job.request
        store = self.runner.store
        while not store.reading(partial(settled, snapshot=self.snapshot)):
            self.runner.renew(self.job, "waiting for the writes in flight at the kick-off to end")
            time.sleep(SETTLE_POLL)
        self._fence_settled_writes()
        types = store.reading(self._types, replica=True)
        patients = store.reading(self._patients, replica=True)
        outputs: list[dict[str, Any]] = []
        for number, resource_type in enumerate(types):
            ids = self._filtered_ids(resource_type)
            output = _Output(resource_type, self.folder, self.runner.file_size)
            try:
                self._export_type(resource_type, ids, patients, output, f"{number + 1}/{len(types)}")
            finally:
                output.close()
            outputs.extend(self._entry(resource_type, name, count) for name, count in output.done)
        errors = []
        if request.ignored:
            errors.append(self._warnings(request.ignored))
        return {
            "transactionTime": self.job.transaction_time,
            "request": self.job.request_url,
            "requiresAccessToken": self.runner.requires_token,
            "output": outputs,
            "error": errors,
        }

    def _entry(self, resource_type: str, name: str, count: int) -> dict[str, Any]:
        return {"type": resource_type, "url": f"{self.job.base}/$export-file/{self.job.id}/{name}", "count": count}

    def _warnings(self, ignored: Iterable[str]) -> dict[str, Any]:
        issues = [
            Issue("warning", "not-supported", f"The export parameter {name} was ignored", (name,)) for name in ignored
        ]
        name = "OperationOutcome-1.ndjson"
        (self.folder / name).write_bytes(orjson.dumps(operation_outcome(issues)) + b"\n")
        return self._entry("OperationOutcome", name, 1)

    # -- what to export ------------------------------------------------------------------------------------------------

    def _fence_settled_writes(self) -> None:
        """Raise this job's fence to the primary's log position now: the writes in flight at the kick-off have ended,
        but may have committed after the claim, so a read replica must replay this far before serving the snapshot
        (a transaction that writes nothing notes the position, storage/routing.py)."""
        current = SESSION.get()
        if current is None:
            return
        with session() as settling:
            self.runner.store.transact(_nothing)
        current.after = max(current.after, settling.written)
        # A replica replays that within a check or two: the export's reads are worth waiting that long for.
        self.runner.store.await_replica(current.fence, REPLICA_WAIT)

    def _types(self, reader: SqlReader) -> list[str]:
        """The types to export: those asked for (else every type present in the snapshot; for Patient and Group
        exports only types of the Patient compartment) that the owner may read and search."""
        request = self.job.request
        present = snapshot_types(reader, self.snapshot)
        chosen = [name for name in (request.types or present) if name in present]
        if request.level != "system":
            compartment = self.service.compartment
            chosen = [name for name in chosen if name == "Patient" or compartment.codes(name)]
        return [name for name in chosen if self.caller.may("r", name) and self.caller.may("s", name)]

    def _patients(self, reader: SqlReader) -> set[str] | None:
        """The patients whose compartments bound a Patient or Group export (None: every patient)."""
        request = self.job.request
        chosen: set[str] | None = set(request.patients) if request.patients else None
        if request.level == "group":
            assert request.group is not None
            members = group_members(reader, request.group)
            chosen = members if chosen is None else chosen & members
        return chosen

    def _filtered_ids(self, resource_type: str) -> set[str] | None:
        """The ids ``_typeFilter`` selects of ``resource_type`` (the search engine's answer, its searches OR-ed;
        None: no filter for the type)."""
        queries = self.job.request.type_filters.get(resource_type)
        if not queries:
            return None
        found: set[str] = set()
        for query in queries:
            matching = partial(self._matching, resource_type=resource_type, query=query)
            found |= self.runner.store.reading(matching, replica=True)
        return found

    def _matching(self, reader: SqlReader, resource_type: str, query: str) -> set[str]:
        service = self.service
        items = [(name, value) for name, value in _query_items(query) if name not in ("_count", "_sort", "_total")]
        search = parse_search(
            service.registry, (resource_type,), items, strict=True, max_count=FILTER_PAGE, limits=service.search_limits
        )
        search = replace(search, count=FILTER_PAGE, total="none", summary=None, elements=None, includes=())
        found: set[str] = set()
        while True:
            result = run_search(reader, search, self.bases.matching)
            found.update(hit.id for hit in result.matches)
            if not result.next_cursor:
                return found
            search = replace(search, cursor=result.next_cursor)

    # -- writing -----------------------------------------------------------------------------------------------------

    def _export_type(
        self, resource_type: str, ids: set[str] | None, patients: set[str] | None, output: _Output, step: str
    ) -> None:
        request = self.job.request
        confined = self.caller.confined_to("r", resource_type)
        elements = element_names(request.elements, resource_type)
        after = ""
        while True:
            page = self.runner.store.reading(
                partial(snapshot_page, resource_type=resource_type, snapshot=self.snapshot, after=after),
                replica=True,
            )
            for row in page:
                line = self._line(row, resource_type, ids, patients, confined, elements)
                if line is not None:
                    output.write(line)
                    self.exported += 1
            self.runner.renew(self.job, f"{self.exported} resources written; {resource_type} ({step})")
            if len(page) == 0:
                return
            after = page[-1].id

    def _line(
        self,
        row: Row,
        resource_type: str,
        ids: set[str] | None,
        patients: set[str] | None,
        confined: str | None,
        elements: tuple[str, ...] | None,
    ) -> bytes | None:
        request = self.job.request
        if request.since is not None and row.last_updated <= request.since:
            return None
        if ids is not None and row.id not in ids:
            return None
        by_compartment = request.level != "system" or confined is not None
        if not by_compartment and elements is None:
            return row.body + b"\n"  # stored bodies are compact JSON: one line each
        resource = orjson.loads(row.body)
        if by_compartment:
            inside = self.service.compartment.patients(resource, self.bases.matching)
            if not inside or (patients is not None and not inside & patients):
                return None
            if confined is not None and confined not in inside:
                return None
        if elements is not None:
            resource = shape(resource, None, elements) or resource
        return orjson.dumps(resource) + b"\n"


def element_names(elements: tuple[str, ...], resource_type: str) -> tuple[str, ...] | None:
    """The ``_elements`` that apply to ``resource_type`` (``Type.element`` for that type, or ``element`` for
    all); None when none do (the resource is exported whole)."""
    chosen = []
    for item in elements:
        head, dot, tail = item.partition(".")
        if not dot:
            chosen.append(item)
        elif head == resource_type:
            chosen.append(tail)
    return tuple(chosen) if chosen else None


def group_members(reader: SqlReader, group_id: str) -> set[str]:
    """The ids of the Patients a Group's active members reference."""
    version = reader.read("Group", group_id)
    if version is None or version.body is None:
        return set()
    members = orjson.loads(version.body).get("member", [])
    found = set()
    for member in members:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = member.get("entity", {}).get("reference", "")
        head, slash, patient_id = str(reference).rpartition("Patient/")
        if slash and patient_id and "/" not in patient_id and (not head or head.endswith("/")):
            found.add(patient_id)
    return found


def _query_items(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _nothing(tx: object) -> None:
    """A transaction that writes nothing."""
