"""Write the studies of import-dicom while the files are still being read: each study once the records read have
moved on to another study, so that the writes (this process) and the reads (the reader processes) run side by side.
Used by ``importer``.

The records come in the files' order (``importer.read_paths``' ``take``), on the event loop. A study is queued for
writing when a record of another study comes; the writer (one coroutine, one study after the other, each in its own
transaction as ``writer.write_study`` writes it) assembles it from the records it has when it takes it. Files of a
study are usually together (a folder per study or series): then each study is written once, with all its instances,
as writing them after all the reads did. When more records of a study come after it was written (its files mixed
with another study's), it is queued again and written again with all its records, merged into what the first write
found on the server (``writer.Before``): the study ends as one write of all of them would have made it, counted once
in the summary (``Tally``) as that write would count it, with a version or two more in its history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_imaging.dicom.mapping import InstanceRecord
from fhir_imaging.dicom.study import StudyGroup, to_fhir_imaging_study
from fhir_imaging.dicom.writer import Before, Tally, write_study


@dataclass(slots=True)
class _Written:
    """A study written in this run: what its first write found, how many records it held, and how it is counted
    (created, or else left unchanged or updated)."""

    before: Before
    records: int
    created: bool
    unchanged: bool


@dataclass(slots=True)
class StudyStream:
    """Records in (``add``, then ``finish``), studies written by ``run`` (see the module doc); ``advance(n)`` after
    each study written."""

    tally: Tally = field(default_factory=Tally)
    advance: Callable[[int], None] = lambda n: None
    records: dict[str, list[InstanceRecord]] = field(default_factory=dict)  # study → its records, in order
    patients: set[str] = field(default_factory=set)  # the studies' patients (first record's identifier)
    _current: str | None = None
    _queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _queued: set[str] = field(default_factory=set)
    _written: dict[str, _Written] = field(default_factory=dict)
    _tried: set[str] = field(default_factory=set)
    _writing: bool = False

    @property
    def idle(self) -> bool:
        """Nothing to write now (the reads may use this process)."""
        return not self._writing and self._queue.empty()

    def add(self, records: list[InstanceRecord]) -> None:
        """More records, in the files' order (each instance once)."""
        for record in records:
            uid = record.study_uid
            found = self.records.get(uid)
            if found is None:
                self.records[uid] = found = []
                self.patients.add(str(record.patient["identifier"][0]))
            found.append(record)
            if uid != self._current:
                self._close()
                self._current = uid

    def finish(self) -> None:
        """No more records: the last study is queued, and ``run`` returns once it has written everything."""
        self._close()
        self._current = None
        self._queue.put_nowait(None)

    def _close(self) -> None:
        uid = self._current
        if uid is not None and uid not in self._queued:
            self._queued.add(uid)
            self._queue.put_nowait(uid)

    async def run(self, client: Any) -> None:
        """Write the studies queued, one after the other, until ``finish``."""
        while (uid := await self._queue.get()) is not None:
            self._queued.discard(uid)
            self._writing = True
            try:
                await self._write(client, uid)
            finally:
                self._writing = False

    async def _write(self, client: Any, uid: str) -> None:
        records = list(self.records[uid])  # the records taken now: more may come while the study is written
        written = self._written.get(uid)
        if written is not None and written.records == len(records):
            return
        group = StudyGroup(uid, records[0].patient, to_fhir_imaging_study(records), records)
        tally = self.tally
        if written is None:
            tally.failed[:] = [failure for failure in tally.failed if failure[0] != uid]  # tried again
            created, unchanged = tally.studies_created, tally.studies_unchanged
            before = await write_study(client, group, tally)
            if before is not None:
                counts = tally.studies_created > created, tally.studies_unchanged > unchanged
                self._written[uid] = _Written(before, len(records), *counts)
            if uid not in self._tried:
                self._tried.add(uid)
                self.advance(1)
            return
        again = Tally()
        found = await write_study(client, group, again, before=written.before)
        tally.failed += again.failed
        tally.series_added += again.series_added
        tally.instances_added += again.instances_added
        tally.patients_created += again.patients_created
        tally.patients_updated += again.patients_updated
        if found is None:
            return
        written.records = len(records)
        if not written.created and written.unchanged == found.changed:  # counted as the whole write would be
            step = -1 if written.unchanged else 1
            tally.studies_unchanged += step
            tally.studies_updated -= step
            written.unchanged = not found.changed
