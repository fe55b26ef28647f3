"""``fhir-imaging import-dicom PATH…``: read DICOM files (folders walked, DICOMDIR indexes followed), group them by
study and series, and write each study with its Patient through the FHIR REST API (``writer.py``).

Spec: DICOM PS3.10 §7 (the Part 10 file: preamble, ``DICM``, file meta) and PS3.3 F.3 (the DICOMDIR's Directory
Record Sequence and its Referenced File IDs); https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom.

Only headers are read, and of them only the attributes the mapping uses (``reading.py``, ``header.py``); with many
files, by ``--read-workers`` processes and this one, the results taken in the files' order. A file that is not
DICOM Part 10, cannot be parsed, or lacks a UID or the modality is reported with the reason and skipped; the other
files are imported, one transaction per study.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings, usable_cores
from fhir_imaging.dicom import reading
from fhir_imaging.dicom.limits import MAX_DEFAULT_READ_WORKERS, PARALLEL_FROM, READ_CHUNK
from fhir_imaging.dicom.mapping import InstanceRecord, MappingOptions
from fhir_imaging.dicom.progress import Reporter
from fhir_imaging.dicom.reading import (
    FileRead,
    Skip,
    Skipped,
    check_complete,
    dicomdir_files,
    read_file,
    read_files,
    read_task,
)
from fhir_imaging.dicom.stream import StudyStream
from fhir_imaging.dicom.study import group_studies
from fhir_imaging.dicom.writer import Tally, write_study

__all__ = ["Skip", "Skipped", "check_complete", "dicomdir_files", "read_file", "read_files"]  # from ``reading``


@dataclass(slots=True)
class ReadResult:
    """What reading the paths found."""

    records: list[InstanceRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    files: int = 0
    dicomdirs: int = 0
    duplicates: int = 0  # instances met twice (same SOPInstanceUID in two files)
    reader_cpu_seconds: float = field(default=0.0, compare=False)  # CPU time of the reader processes (not this one)


@dataclass(slots=True)
class ImportSummary:
    """The outcome of one import: files read and skipped, and what the writes did."""

    read: ReadResult
    tally: Tally
    studies: int = 0
    patients: int = 0

    def lines(self) -> list[str]:
        tally, read = self.tally, self.read
        lines = [
            f"files: {read.files} read, {len(read.records)} instances, {read.dicomdirs} DICOMDIR, "
            f"{len(read.skipped)} skipped" + (f", {read.duplicates} duplicate instances" if read.duplicates else ""),
            f"studies: {self.studies} ({tally.studies_created} created, {tally.studies_updated} updated, "
            f"{tally.studies_unchanged} unchanged, {len(tally.failed)} failed)",
            f"series added: {tally.series_added}; instances added: {tally.instances_added}",
            f"patients: {self.patients} ({tally.patients_created} created, {tally.patients_updated} updated)",
        ]
        lines += [f"skipped {path}: {reason}" for path, reason in read.skipped]
        lines += [f"failed study {uid}: {reason}" for uid, reason in tally.failed]
        return lines


def walk(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Every file under ``paths`` (folders recursively, in name order), each once; missing paths come out as they
    are, for ``read_paths`` to report."""
    return (path for path, _ in walk_resolved(paths))


def walk_resolved(paths: Iterable[Path | str]) -> Iterator[tuple[Path, Path]]:
    """``walk``, each file with its resolved path (what tells two names of one file apart)."""
    seen: set[Path] = set()
    for path in map(Path, paths):
        candidates = _files_under(path) if path.is_dir() else [(path, path.resolve())]
        for candidate, key in candidates:
            if key not in seen:
                seen.add(key)
                yield candidate, key


def _files_under(folder: Path) -> list[tuple[Path, Path]]:
    """The files under ``folder`` with their resolved paths, sorted: what ``sorted(p for p in folder.rglob("*")
    if p.is_file())`` finds (symbolic links to files kept, symbolic links to folders not followed, unreadable
    folders passed over), each directory resolved once instead of each file."""
    found: list[tuple[Path, Path]] = []
    folders = [(folder, folder.resolve())]
    while folders:
        parent, resolved = folders.pop()
        try:
            with os.scandir(parent) as scan:
                entries = list(scan)
        except OSError:
            continue
        for entry in entries:
            path = parent / entry.name
            try:
                if entry.is_symlink():
                    if path.is_file():
                        found.append((path, path.resolve()))
                elif entry.is_dir():
                    folders.append((path, resolved / entry.name))
                elif entry.is_file():
                    found.append((path, resolved / entry.name))
            except OSError:
                continue
    found.sort(key=lambda pair: pair[0])
    return found


def default_read_workers() -> int:
    """``--read-workers``' default: the cores this process may use, at most ``MAX_DEFAULT_READ_WORKERS``."""
    return usable_cores(MAX_DEFAULT_READ_WORKERS)


@contextmanager
def _readers(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` reader processes (forked from a fresh server process, not from this one, whose threads may hold
    locks), or ``None`` for reading in this process."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([reading.__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        yield pool
    finally:  # every result is taken (or the read failed): processes still starting are not waited for
        pool.shutdown(wait=False, cancel_futures=True)


def read_paths(
    paths: Iterable[Path | str],
    options: MappingOptions,
    advance: Callable[[int], None] = lambda n: None,
    workers: int = 1,
    walked: list[tuple[Path, Path]] | None = None,
    read_here: bool | Callable[[], bool] = True,
    take: Callable[[list[InstanceRecord]], None] | None = None,
    stop: threading.Event | None = None,
) -> ReadResult:
    """Read every file under ``paths``, following DICOMDIRs (each file once); ``advance(n)`` after each file. With
    ``workers`` > 1 the files are parsed by that many processes once the first of them is up, ``READ_CHUNK`` files
    per task and ``2 × workers`` tasks ahead, and (``read_here``, or while ``read_here()`` says so) by this process
    too until then and while the oldest task is not done; the results are taken in the files' order, so the outcome
    is the same. ``take(records)`` is given the new records of each chunk as they come (the rest of the import runs
    beside the reads); once ``stop`` is set, ``Stopped`` is raised at the next chunk."""
    here = read_here if callable(read_here) else (lambda: read_here)
    result = ReadResult()
    walked = list(walk_resolved(paths)) if walked is None else walked  # ``walk_resolved(paths)``, done already
    queue = deque(path for path, _ in walked)
    seen = {key for _, key in walked}
    instances: set[str] = set()
    listed: set[Path] = set()
    reader_cpu: dict[int, float] = {}  # reader process → its CPU seconds
    ahead = 2 * max(workers, 1)
    with _readers(workers) as pool:
        pending: deque[tuple[list[Path], Future[tuple[list[FileRead], int, float]] | list[FileRead]]] = deque()
        in_flight = 0
        started = pool.submit(os.getpid) if pool is not None and here() else None  # done: a reader is up
        while queue or pending:
            while pool is not None and (started is None or started.done()) and queue and in_flight < ahead:
                chunk = _next_chunk(queue)
                pending.append((chunk, pool.submit(read_task, chunk, options)))
                in_flight += 1
            oldest = pending[0][1] if pending else None
            waiting = isinstance(oldest, Future) and not oldest.done()
            if stop is not None and stop.is_set():
                raise Stopped
            if queue and (oldest is None or (waiting and here())):
                chunk = _next_chunk(queue)
                pending.append((chunk, read_files(chunk, options)))  # read here rather than wait
                continue
            chunk, task = pending.popleft()
            if isinstance(task, list):
                reads = task
            else:
                in_flight -= 1
                reads, pid, cpu = task.result()
                reader_cpu[pid] = max(cpu, reader_cpu.get(pid, 0.0))
            count = len(result.records)
            for path, read in zip(chunk, reads, strict=True):
                _take(result, path, read, (seen, instances, listed, queue))
                advance(1)
            if take is not None and len(result.records) > count:
                take(result.records[count:])
    result.reader_cpu_seconds = sum(reader_cpu.values())
    return result


class Stopped(Exception):
    """The reads were stopped (``read_paths``' ``stop``): the import failed elsewhere."""


def _next_chunk(queue: deque[Path]) -> list[Path]:
    return [queue.popleft() for _ in range(min(READ_CHUNK, len(queue)))]


def _take(
    result: ReadResult,
    path: Path,
    read: FileRead,
    state: tuple[set[Path], set[str], set[Path], deque[Path]],
) -> None:
    """Add one file's read to ``result``: its record (each SOPInstanceUID once), its skip, or a DICOMDIR's files
    (each file once) to the ``queue``."""
    seen, instances, listed, queue = state
    result.files += 1
    if isinstance(read, Skipped):
        reason = read.reason
        if path in listed and reason == "no such file":
            reason = "listed in a DICOMDIR but missing"
        result.skipped.append((str(path), reason))
    elif isinstance(read, list):
        result.dicomdirs += 1
        for listed_path in read:
            if isinstance(listed_path, Skipped):
                result.skipped.append((str(listed_path.path), listed_path.reason))
                continue
            key = listed_path.resolve()
            if key not in seen:
                seen.add(key)
                listed.add(listed_path)
                queue.append(listed_path)
    elif read.sop_uid in instances:
        result.duplicates += 1
    else:
        instances.add(read.sop_uid)
        result.records.append(read)


async def import_records(client: Any, read: ReadResult, reporter: Reporter | None = None) -> ImportSummary:
    """Group ``read.records`` by study and write each study through ``client`` (an ``httpx.AsyncClient`` on FHIR)."""
    groups = group_studies(read.records)
    summary = ImportSummary(read, Tally(), studies=len(groups))
    summary.patients = len({str(group.patient["identifier"][0]) for group in groups})
    task = reporter.task("writing studies", len(groups)) if reporter else None
    for group in groups:
        await write_study(client, group, summary.tally)
        if task is not None:
            task(1)
    return summary


async def import_dicom(
    paths: Iterable[Path | str],
    *,
    server: RemoteServer | None = None,
    settings: Settings | None = None,
    options: MappingOptions | None = None,
    reporter: Reporter | None = None,
    read_workers: int | None = None,
) -> ImportSummary:
    """Read ``paths`` (with ``read_workers`` processes, default ``default_read_workers()``, when there are at
    least ``PARALLEL_FROM`` files) and write their studies to the FHIR server at ``server`` (or in-process on
    ``settings.database``), one study at a time, each while the reader processes read the next files
    (``stream.py``); without reader processes, after the reads (one process: writing beside reading would only add
    the cost of two threads taking turns). An error in the writes stops the reads, and one in the reads the writes;
    it is raised once both have stopped."""
    options = options or MappingOptions()
    paths = list(paths)
    walked = list(walk_resolved(paths))
    task = reporter.task("reading DICOM files", len(walked)) if reporter else (lambda n: None)
    workers = default_read_workers() if read_workers is None else read_workers
    workers = workers if len(walked) >= PARALLEL_FROM else 1
    stream = StudyStream()
    if reporter:
        stream.advance = reporter.task("writing studies", None)
    if workers <= 1:  # no reader processes: the reads and the writes would share this process's one core (GIL)
        read = read_paths(paths, options, task, 1, walked)
        stream.add(read.records)
        stream.finish()
        async with fhir_client(server=server, settings=settings) as client:
            await stream.run(client)
        return ImportSummary(read, stream.tally, studies=len(stream.records), patients=len(stream.patients))
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def take(records: list[InstanceRecord]) -> None:
        loop.call_soon_threadsafe(stream.add, records)

    def idle() -> bool:
        return stream.idle

    reading = asyncio.ensure_future(
        asyncio.to_thread(read_paths, paths, options, task, workers, walked, idle, take, stop)
    )
    try:
        async with fhir_client(server=server, settings=settings) as client:
            writing = asyncio.ensure_future(stream.run(client))
            try:
                await asyncio.wait((reading, writing), return_when=asyncio.FIRST_COMPLETED)
                if writing.done():
                    writing.result()  # the writes failed (they end only after ``finish``)
                read = reading.result()
                stream.finish()
                await writing
            finally:
                stop.set()
                writing.cancel()
                await asyncio.wait((writing,))
    finally:
        stop.set()
        await asyncio.wait((reading,))  # the reader processes are shut down before this returns or raises
        if not reading.cancelled():
            reading.exception()  # taken: ``Stopped`` after a failed write is not news
    return ImportSummary(read, stream.tally, studies=len(stream.records), patients=len(stream.patients))
