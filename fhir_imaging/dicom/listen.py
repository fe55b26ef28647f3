"""``fhir-imaging listen``: receive instances over DICOM (C-STORE, ``listener.py``) and write each study, once its
burst of instances is over (``collector.py``), with its Patient through the FHIR REST API, merged with what the
server holds (``writer.py``, as ``import-dicom`` and the syncs do).

Spec: https://hl7.org/fhir/R4/imagingstudy.html, https://hl7.org/fhir/R4/http.html#transaction; docs/dicom.md,
*listen*.

pynetdicom's threads receive; this module's event loop writes, one study at a time, on the same client path as
every other DICOM command (in-process on ``--database``, or over HTTP to ``--server`` with its authorization). It
wakes when an association ends and at least every ``TICK`` seconds for the quiet period. On Ctrl-C or SIGTERM the
port is closed first, then everything held is written.

A study whose write fails because the FHIR server is down or busy (no connection, a 5xx, 429: ``Unavailable``) is
held back in the collector and tried again after ``RETRY_FIRST_DELAY`` seconds, then twice as long each time (at
most ``RETRY_MAX_DELAY``), for ``--retry-for`` seconds from its first failure; the other studies due in that round
are held back with it, untried. It is dropped (logged, counted as failed; with ``--store-dir`` its files are there
for ``import-dicom``) when that time is up, when holding it again would pass ``--max-held-instances``, or when the
listener stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.collector import StudyCollector
from fhir_imaging.dicom.listen_options import ListenOptions
from fhir_imaging.dicom.listener import Listener
from fhir_imaging.dicom.mapping import InstanceRecord, MappingOptions
from fhir_imaging.dicom.study import StudyGroup, group_studies
from fhir_imaging.dicom.writer import ServerUnsupported, Tally, Unavailable, write_study

LOG = logging.getLogger("fhir_imaging.listen")
TICK = 1.0
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


@dataclass(slots=True)
class ListenSummary:
    """What a listener did, for the lines printed when it stops."""

    received: int = 0
    refused: int = 0
    studies_written: int = 0
    retries: int = 0  # writes held back because the FHIR server was down or busy
    tally: Tally = field(default_factory=Tally)

    def lines(self) -> list[str]:
        tally = self.tally
        return [
            f"instances: {self.received} received, {self.refused} refused",
            f"studies: {self.studies_written} writes ({tally.studies_created} created, {tally.studies_updated} "
            f"updated, {tally.studies_unchanged} unchanged, {len(tally.failed)} failed)",
            f"series added: {tally.series_added}; instances added: {tally.instances_added}",
            f"patients: {tally.patients_created} created, {tally.patients_updated} updated",
            f"writes held back for the FHIR server: {self.retries}",
            *(f"failed study {uid}: {reason}" for uid, reason in tally.failed),
        ]


@dataclass(slots=True)
class _Failing:
    """A study whose writes failed as unavailable: since when, how many times."""

    since: float
    attempts: int = 0


@dataclass(slots=True)
class StudyWriter:
    """Writes due studies, holding back those the FHIR server could not take (see the module doc)."""

    collector: StudyCollector
    retry_for: float
    summary: ListenSummary = field(default_factory=ListenSummary)
    failing: dict[str, _Failing] = field(default_factory=dict)  # by StudyInstanceUID

    async def write_due(self, client: Any, due: list[list[InstanceRecord]], final: bool = False) -> None:
        """Write each due study (its records grouped into one ImagingStudy) and log what happened to it; with
        ``final`` (the listener stops), a study the server cannot take is dropped at once."""
        unavailable: str | None = None
        for records in due:
            for group in group_studies(records):
                if unavailable is None:
                    unavailable = await self._write(client, group, records, final)
                else:  # the server was just found down: hold the rest back untried
                    self._failed(group.uid, records, unavailable, final)

    async def _write(self, client: Any, group: StudyGroup, records: list[InstanceRecord], final: bool) -> str | None:
        """Write one study; the reason when the server was unavailable."""
        tally = self.summary.tally
        failed = len(tally.failed)
        try:
            await write_study(client, group, tally, raise_unavailable=True)
        except Unavailable as exc:
            self._failed(group.uid, records, str(exc), final)
            return str(exc)
        except ServerUnsupported as exc:
            tally.failed.append((group.uid, str(exc)))
        self.failing.pop(group.uid, None)
        self.summary.studies_written += 1
        if len(tally.failed) > failed:
            LOG.error("study %s (%d instances) was not written: %s", group.uid, len(records), tally.failed[-1][1])
        else:
            LOG.info("study %s: %d instances received, written", group.uid, len(records))
        return None

    def _failed(self, uid: str, records: list[InstanceRecord], reason: str, final: bool) -> None:
        """Hold the study back for a later attempt, or drop it when its time is up (see the module doc)."""
        now = time.monotonic()
        failing = self.failing.setdefault(uid, _Failing(now))
        failing.attempts += 1
        delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** min(failing.attempts - 1, 30))
        give_up = None
        if final:
            give_up = "the listener stopped"
        elif now + delay > failing.since + self.retry_for:
            give_up = f"tried for {self.retry_for:g} seconds (--retry-for)"
        elif self.collector.held() + len(records) > self.collector.max_held:
            give_up = "no room to hold it (--max-held-instances)"
        if give_up is None:
            self.collector.hold_back(records, now, now + delay)
            self.summary.retries += 1
            LOG.warning("study %s (%d instances) held, tried again in %gs: %s", uid, len(records), delay, reason)
            return
        del self.failing[uid]
        self.summary.tally.failed.append((uid, f"{reason} ({give_up})"))
        self.summary.studies_written += 1
        LOG.error("study %s (%d instances) was dropped, %s: %s", uid, len(records), give_up, reason)


class Stop:
    """Set by a signal, or by a test, to end ``serve``."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()


async def serve(
    options: ListenOptions,
    *,
    server: RemoteServer | None = None,
    settings: Settings | None = None,
    mapping: MappingOptions | None = None,
    stop: Stop | None = None,
    ready: Any = None,
    summary: ListenSummary | None = None,
) -> ListenSummary:
    """Listen until ``stop`` is set (or a signal arrives), writing studies as they are due; then write the rest.
    ``ready(listener)`` is called once the port is open; ``summary`` (returned) is filled in as studies are
    written."""
    loop = asyncio.get_running_loop()
    stop = stop or Stop()
    wake = asyncio.Event()
    collector = StudyCollector(options.quiet_period, options.max_held)

    def wake_writer() -> None:
        loop.call_soon_threadsafe(wake.set)

    listener = Listener(options, collector, mapping, wake=wake_writer)
    writer = StudyWriter(collector, options.retry_for, summary or ListenSummary())
    summary = writer.summary
    async with fhir_client(server=server, settings=settings) as client:
        listener.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests)
                loop.add_signal_handler(signum, stop.set)
        try:
            if ready is not None:
                ready(listener)
            LOG.info("listening as %s on %s:%d", options.aet, options.host, listener.port)
            while not stop.event.is_set():
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.event.wait())
                await asyncio.wait({waiter, stopper}, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                wake.clear()
                listener.sweep(time.monotonic())
                await writer.write_due(client, collector.take_due(time.monotonic()))
        finally:
            listener.stop()
            await writer.write_due(client, collector.take_all(), final=True)
            summary.received, summary.refused = listener.received, listener.refused
    return summary
