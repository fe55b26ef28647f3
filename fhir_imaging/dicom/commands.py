"""The DICOM commands as the CLI runs them: progress bars, the summary, exit codes, ``--watch``.

``fhir-imaging import-dicom`` (``importer.py``), ``sync-dicomweb`` (``dicomweb.py``) and ``sync-dimse``
(``cfind.py``), both syncs over one core (``sync.py``), and ``listen`` (``listen.py``); see docs/dicom.md. Exit
codes: 0 done, 1 some study could not be written, 2 the PACS or the FHIR server cannot be used.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, tzinfo
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.importer import import_dicom
from fhir_imaging.dicom.limits import MEBIBYTE, DimseLimits, PacsLimits
from fhir_imaging.dicom.listen_options import ListenOptions
from fhir_imaging.dicom.mapping import MappingOptions, offset_timezone
from fhir_imaging.dicom.pacs import PacsError
from fhir_imaging.dicom.progress import Reporter, reporting
from fhir_imaging.dicom.sync import StudySource, SyncSummary, sync_once
from fhir_imaging.dicom.writer import WriteError


def parse_timezone(text: str) -> tzinfo:
    """``--timezone``: an IANA name (``Europe/Paris``) or a fixed offset (``+0100``)."""
    if text[:1] in "+-":
        return offset_timezone(text)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {text!r} (use an IANA name such as Europe/Paris, or +HHMM)") from None


def mapping_options(timezone: str | None, patient_id_system: str | None) -> MappingOptions:
    return MappingOptions(parse_timezone(timezone) if timezone else None, patient_id_system)


def pacs_limits(args: Any) -> PacsLimits:
    """The ``PacsLimits`` of ``sync-dicomweb``'s options; ``ValueError`` naming a bad one."""
    return PacsLimits(
        timeout=args.pacs_timeout,
        max_answer_bytes=args.pacs_max_answer_mb * MEBIBYTE,
        max_redirects=args.pacs_max_redirects,
        cross_origin_redirects=args.allow_cross_origin_redirects,
        max_pages=args.max_pages,
        max_studies=args.max_studies,
        max_series_per_study=args.max_series_per_study,
        max_instances_per_study=args.max_instances_per_study,
    )


def listen_options(args: Any) -> ListenOptions:
    """The ``ListenOptions`` of ``listen``'s options; ``ValueError`` naming a bad one."""
    from fhir_imaging.dicom.dimse import check_ae_title

    return ListenOptions(
        aet=check_ae_title(args.aet, "--aet"),
        host=args.host,
        port=args.port,
        allow_aets=tuple(check_ae_title(aet, "--allow-aet") for aet in args.allow_aet or ()),
        store_dir=args.store_dir,
        quiet_period=args.quiet_period,
        timeout=args.dimse_timeout,
        max_pdu_bytes=args.max_pdu_size,
        max_dataset_bytes=args.max_dataset_mb * MEBIBYTE,
        max_associations=args.max_associations,
        max_held=args.max_held_instances,
        retry_for=args.retry_for,
    )


def dimse_limits(args: Any) -> DimseLimits:
    """The ``DimseLimits`` of ``sync-dimse``'s options; ``ValueError`` naming a bad one."""
    return DimseLimits(
        timeout=args.pacs_timeout,
        max_pdu_bytes=args.max_pdu_size,
        max_studies=args.max_studies,
        max_series_per_study=args.max_series_per_study,
        max_instances_per_study=args.max_instances_per_study,
    )


def _print(lines: Sequence[str], out: TextIO | None) -> None:
    for line in lines:
        print(line, file=out or sys.stdout)


def run_import(
    paths: Sequence[str],
    *,
    server: RemoteServer | None,
    settings: Settings,
    options: MappingOptions,
    progress: bool = True,
    out: TextIO | None = None,
    read_workers: int | None = None,
) -> int:
    """``import-dicom``: import, print the summary; 1 when a study failed, 2 when the server cannot be used."""
    try:
        with reporting(progress) as reporter:
            run = import_dicom(
                paths, server=server, settings=settings, options=options, reporter=reporter, read_workers=read_workers
            )
            summary = asyncio.run(run)
    except WriteError as exc:
        print(f"fhir-imaging import-dicom: {exc}", file=sys.stderr)
        return 2
    _print(summary.lines(), out)
    return 1 if summary.tally.failed else 0


@dataclass(frozen=True, slots=True)
class SyncRun:
    """What every pass of a sync command does the same: where to write, how to map, which studies."""

    server: RemoteServer | None
    settings: Settings
    options: MappingOptions
    since: date | None = None
    full: bool = False
    progress: bool = True
    reconcile: bool = False


def sync_pass(run: SyncRun, source: StudySource[Any]) -> SyncSummary:
    """One pass of the sync core over ``source`` (a QIDO-RS or C-FIND reader), with progress bars."""

    async def one_pass(reporter: Reporter) -> SyncSummary:
        async with fhir_client(server=run.server, settings=run.settings) as client:
            return await sync_once(
                client,
                source,
                options=run.options,
                since=run.since,
                full=run.full,
                reporter=reporter,
                reconcile=run.reconcile,
            )

    with reporting(run.progress) as reporter:
        return asyncio.run(one_pass(reporter))


def run_sync(
    command: str,
    run: SyncRun,
    source: StudySource[Any],
    *,
    watch: float | None = None,
    out: TextIO | None = None,
) -> int:
    """``sync-dicomweb`` and ``sync-dimse``: one pass (or one every ``watch`` seconds until interrupted), printing
    each summary. An unreachable PACS ends a single pass with 2; under ``--watch`` it is reported and the next pass
    tries again. A PACS beyond its limits ends the pass like one that is down."""
    try:
        while True:
            try:
                summary = sync_pass(run, source)
            except (PacsError, WriteError) as exc:
                print(f"fhir-imaging {command}: {exc}", file=sys.stderr)
                if watch is None:
                    return 2
            else:
                _print(summary.lines(), out)
                if watch is None:
                    return 1 if summary.tally.failed else 0
            time.sleep(watch)
    except KeyboardInterrupt:
        return 0 if watch is not None else 130


def run_listen(
    options: ListenOptions,
    *,
    server: RemoteServer | None,
    settings: Settings,
    mapping: MappingOptions,
    out: TextIO | None = None,
) -> int:
    """``listen``: receive until Ctrl-C or SIGTERM, logging each study written (stderr), then print the summary; 2
    when the port cannot be opened or the FHIR server cannot be used, 1 when a study could not be written."""
    from fhir_imaging.dicom.listen import serve
    from fhir_imaging.logs import configure_logging

    configure_logging("info")
    logging.getLogger("fhir_imaging.requests").setLevel(logging.WARNING)  # one line per study is enough
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        summary = asyncio.run(serve(options, server=server, settings=settings, mapping=mapping))
    except OSError as exc:
        print(
            f"fhir-imaging listen: cannot listen on {options.host}:{options.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    except WriteError as exc:
        print(f"fhir-imaging listen: {exc}", file=sys.stderr)
        return 2
    _print(summary.lines(), out)
    return 1 if summary.tally.failed else 0
