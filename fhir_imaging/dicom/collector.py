"""What ``listen`` holds between receiving instances and writing studies: the received instances grouped by study,
and when each study is due. No I/O; time is passed in, so the policy is tested from tables.

A study is written once for a burst of instances, not once per instance. It is due when

- every association that brought it instances has ended (released, aborted, or closed), or
- ``quiet_period`` seconds passed without a new instance of it (a sender that keeps its association open), or
- the instances held, all studies together, reach ``max_held``: then the studies held longest are due first.

A study whose write failed because the FHIR server was down or busy is held back (``hold_back``): it is due again
at the time given (the writer's backoff), not before unless the bound above forces it; instances of it that arrive
meanwhile join it.

An association aborted halfway is treated like one released: the instances it delivered were each acknowledged
with a C-STORE success, so they are written as the study they make; the instance in flight when it broke was never
acknowledged and never reaches here. See docs/dicom.md, *listen*.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fhir_imaging.dicom.mapping import InstanceRecord


@dataclass(slots=True)
class _Held:
    records: dict[str, InstanceRecord] = field(default_factory=dict)  # by SOPInstanceUID: a resend counts once
    associations: set[int] = field(default_factory=set)  # still open and having sent instances of it
    first: float = 0.0
    last: float = 0.0
    not_before: float = 0.0  # held back after a failed write: not due before this time


class StudyCollector:
    """Received instances by study, and which studies are due to be written. Thread-safe: the association threads
    add and end, the writer takes what is due."""

    def __init__(self, quiet_period: float, max_held: int) -> None:
        self.quiet_period = quiet_period
        self.max_held = max_held
        self._studies: dict[str, _Held] = {}
        self._open: dict[int, set[str]] = {}  # association → the studies it sent instances of
        self._ended: set[str] = set()
        self._lock = threading.Lock()

    def add(self, association: int, record: InstanceRecord, now: float) -> None:
        with self._lock:
            held = self._studies.get(record.study_uid)
            if held is None:
                held = self._studies[record.study_uid] = _Held(first=now)
            held.records[record.sop_uid] = record
            held.associations.add(association)
            held.last = now
            self._open.setdefault(association, set()).add(record.study_uid)
            self._ended.discard(record.study_uid)

    def end(self, association: int) -> None:
        """The association is over (released, aborted or closed): its studies are due unless another open
        association is still sending to them."""
        with self._lock:
            for uid in self._open.pop(association, set()):
                held = self._studies.get(uid)
                if held is None:
                    continue
                held.associations.discard(association)
                if not held.associations:
                    self._ended.add(uid)

    def hold_back(self, records: list[InstanceRecord], now: float, not_before: float) -> None:
        """Hold a study again whose write failed, due at ``not_before`` (see the module doc)."""
        if not records:
            return
        with self._lock:
            uid = records[0].study_uid
            held = self._studies.get(uid)
            if held is None:
                held = self._studies[uid] = _Held(first=now, last=now)
            for record in records:
                held.records.setdefault(record.sop_uid, record)
            held.not_before = not_before
            if not held.associations:
                self._ended.add(uid)

    def held(self) -> int:
        with self._lock:
            return sum(len(held.records) for held in self._studies.values())

    def take_due(self, now: float) -> list[list[InstanceRecord]]:
        """The records of every study that is due (see the module doc), removed from what is held."""
        with self._lock:
            due = set(self._ended)
            due.update(uid for uid, held in self._studies.items() if now - held.last >= self.quiet_period)
            due -= {uid for uid, held in self._studies.items() if held.not_before > now}
            held_count = sum(len(held.records) for uid, held in self._studies.items() if uid not in due)
            for uid, held in sorted(self._studies.items(), key=lambda item: item[1].first):
                if held_count < self.max_held:
                    break
                if uid not in due:
                    due.add(uid)
                    held_count -= len(held.records)
            return [self._take(uid) for uid in sorted(due, key=lambda uid: self._studies[uid].first)]

    def take_all(self) -> list[list[InstanceRecord]]:
        """Everything held, in the order studies arrived (when the listener stops)."""
        with self._lock:
            order = sorted(self._studies, key=lambda uid: self._studies[uid].first)
            return [self._take(uid) for uid in order]

    def _take(self, uid: str) -> list[InstanceRecord]:
        held = self._studies.pop(uid)
        self._ended.discard(uid)
        for association in held.associations:
            self._open.get(association, set()).discard(uid)
        return list(held.records.values())
