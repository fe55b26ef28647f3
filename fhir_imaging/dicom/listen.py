"""``fhir-imaging listen``: receive instances over DICOM (C-STORE, ``listener.py``) and write each study, once its
burst of instances is over (``collector.py``), with its Patient through the FHIR REST API, merged with what the
server holds (``writer.py``, as ``import-dicom`` and the syncs do).

Spec: https://hl7.org/fhir/R4/imagingstudy.html, https://hl7.org/fhir/R4/http.html#transaction; docs/dicom.md,
*listen*.

pynetdicom's threads receive; this module's event loop writes, one study at a time, on the same client path as
every other DICOM command (in-process on ``--database``, or over HTTP to ``--server`` with its authorization). It
wakes when an association ends and at least every ``TICK`` seconds for the quiet period. On Ctrl-C or SIGTERM the
port is closed first, then everything held is written.
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
from fhir_imaging.dicom.listener import Listener, ListenOptions
from fhir_imaging.dicom.mapping import InstanceRecord, MappingOptions
from fhir_imaging.dicom.study import group_studies
from fhir_imaging.dicom.writer import ServerUnsupported, Tally, write_study

LOG = logging.getLogger("fhir_imaging.listen")
TICK = 1.0


@dataclass(slots=True)
class ListenSummary:
    """What a listener did, for the lines printed when it stops."""

    received: int = 0
    refused: int = 0
    studies_written: int = 0
    tally: Tally = field(default_factory=Tally)

    def lines(self) -> list[str]:
        tally = self.tally
        return [
            f"instances: {self.received} received, {self.refused} refused",
            f"studies: {self.studies_written} writes ({tally.studies_created} created, {tally.studies_updated} "
            f"updated, {tally.studies_unchanged} unchanged, {len(tally.failed)} failed)",
            f"series added: {tally.series_added}; instances added: {tally.instances_added}",
            f"patients: {tally.patients_created} created, {tally.patients_updated} updated",
            *(f"failed study {uid}: {reason}" for uid, reason in tally.failed),
        ]


async def write_due(client: Any, due: list[list[InstanceRecord]], summary: ListenSummary) -> None:
    """Write each due study (its records grouped into one ImagingStudy) and log what happened to it."""
    for records in due:
        for group in group_studies(records):
            failed = len(summary.tally.failed)
            try:
                await write_study(client, group, summary.tally)
            except ServerUnsupported as exc:
                summary.tally.failed.append((group.uid, str(exc)))
            summary.studies_written += 1
            if len(summary.tally.failed) > failed:
                LOG.error(
                    "study %s (%d instances) was not written: %s", group.uid, len(records), summary.tally.failed[-1][1]
                )
            else:
                LOG.info("study %s: %d instances received, written", group.uid, len(records))


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
) -> ListenSummary:
    """Listen until ``stop`` is set (or a signal arrives), writing studies as they are due; then write the rest.
    ``ready(listener)`` is called once the port is open."""
    loop = asyncio.get_running_loop()
    stop = stop or Stop()
    wake = asyncio.Event()
    collector = StudyCollector(options.quiet_period, options.max_held)

    def wake_writer() -> None:
        loop.call_soon_threadsafe(wake.set)

    listener = Listener(options, collector, mapping, wake=wake_writer)
    summary = ListenSummary()
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
                await write_due(client, collector.take_due(time.monotonic()), summary)
        finally:
            listener.stop()
            await write_due(client, collector.take_all(), summary)
            summary.received, summary.refused = listener.received, listener.refused
    return summary
