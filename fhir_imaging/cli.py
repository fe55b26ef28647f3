"""The ``fhir-imaging`` command. Parses arguments and calls the services; no logic of its own."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_imaging import FHIR_VERSION, __version__
from fhir_imaging.config import SETTINGS, Settings, load_settings
from fhir_imaging.logs import configure_logging, redact, redact_url

if TYPE_CHECKING:
    from fhir_imaging.storage.base import Store

SERVE_SETTINGS = tuple(setting for setting in SETTINGS if not setting.secret)  # a secret has no flag: ps shows flags
DATABASE_UNUSABLE = 2  # exit code of serve and reindex when the database cannot be opened or used
UNSAFE_SETUP = 2  # exit code of serve on settings it refuses (serve_setup_problem), e.g. no authorization off loopback


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for setting in SERVE_SETTINGS:
        default = "none" if setting.default is None else setting.default
        if isinstance(setting.default, bool):
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_const",
                const=True,
                default=None,
                help=f"{setting.help} (default: off; environment: {setting.env}=true)",
            )
            continue
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            type=setting.parse,
            default=None,
            choices=setting.choices,
            metavar=setting.name.upper() if not setting.choices else None,
            help=f"{setting.help} (default: {default}; environment: {setting.env})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-imaging",
        description=f"A FHIR R4 ({FHIR_VERSION}) server for medical imaging, served at http://HOST:PORT/baseR4.",
        epilog="Every option of serve (and --database elsewhere) also reads an environment variable "
        "FHIR_IMAGING_<OPTION>; an option wins over it.",
    )
    parser.add_argument("--version", action="version", version=f"fhir-imaging {__version__} (FHIR {FHIR_VERSION})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    secrets = "; ".join(f"{setting.env}: {setting.help}" for setting in SETTINGS if setting.secret)
    serve = commands.add_parser(
        "serve",
        help="run the FHIR server",
        description="Run the FHIR server at http://HOST:PORT/baseR4 (CapabilityStatement at /baseR4/metadata).",
        epilog=f"Secrets are read from the environment only, never from an option: {secrets}.",
    )
    _add_settings(serve)
    load = commands.add_parser(
        "load",
        help="load Bundles, resources and NDJSON files",
        description="Load transaction/batch/collection Bundles, single resources and NDJSON files (one resource "
        "per line), from files or folders, through the FHIR API. Resources with an id are written with PUT (loading "
        "again changes no set of resources), others with POST. Bad lines are reported and skipped. Exits 1 when "
        "anything failed.",
    )
    load.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="files or folders (*.json, *.ndjson)")
    _add_target(load)
    load.add_argument("--batch-size", type=int, default=500, help="resources per transaction (default: 500)")
    reindex_command = commands.add_parser(
        "reindex",
        help="rebuild every search index from the stored resources",
        description="Rebuild the search index tables from the current version of every stored resource, in one "
        "transaction (searches keep answering from the old index until it commits).",
    )
    reindex_command.add_argument(
        "--database", default=None, help="database URL (default: FHIR_IMAGING_DATABASE or sqlite:///fhir-imaging.db)"
    )
    _add_dicom_commands(commands)
    return parser


def _add_dicom_commands(commands: Any) -> None:
    """``import-dicom`` and ``sync-dicomweb`` (fhir_imaging/dicom; docs/dicom.md)."""
    imports = commands.add_parser(
        "import-dicom",
        help="import DICOM files as ImagingStudy and Patient resources",
        description="Read DICOM files (folders are walked, DICOMDIR indexes followed; headers only), group them by "
        "study and series, and write each study with its Patient in one transaction, merged with what the server "
        "holds: importing the same files twice changes nothing. Unreadable and non-DICOM files are reported and "
        "skipped. Exits 1 when a study could not be written, 2 when the FHIR server cannot be used.",
    )
    imports.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files, folders or DICOMDIR files")
    _add_target(imports)
    _add_dicom_mapping_options(imports)
    sync = commands.add_parser(
        "sync-dicomweb",
        help="create or update ImagingStudy resources from a PACS over DICOMweb (QIDO-RS)",
        description="Read the studies, series and instances of a PACS over QIDO-RS and create or update their "
        "ImagingStudy and Patient resources, each study pointing at an Endpoint for the PACS's WADO-RS root (URL). "
        "Runs are incremental and idempotent. Exits 2 when the PACS or the FHIR server cannot be reached.",
    )
    sync.add_argument("url", metavar="URL", help="DICOMweb root of the PACS, e.g. http://pacs:8042/dicom-web")
    _add_target(sync)
    sync.add_argument("--since", default=None, help="only studies from this date on: 2024-06-15, or 7d for 7 days")
    sync.add_argument(
        "--watch", type=float, default=None, metavar="SECONDS", help="sync again every SECONDS until interrupted"
    )
    sync.add_argument(
        "--full", action="store_true", help="read every study again, not only those whose instance count changed"
    )
    _add_pacs_limits(sync)
    _add_dicom_mapping_options(sync)


def _add_pacs_limits(parser: argparse.ArgumentParser) -> None:
    """The bounds ``sync-dicomweb`` puts on the PACS (``PacsLimits``; docs/dicom.md, *Limits*)."""
    from fhir_imaging.dicom.limits import MEBIBYTE, PacsLimits

    limits = PacsLimits()
    bounds = (
        ("--pacs-timeout", float, "SECONDS", limits.timeout, "seconds for one whole answer of the PACS (connect, "
         "headers, body, redirects)"),
        ("--pacs-max-answer-mb", int, "MB", limits.max_answer_bytes // MEBIBYTE, "largest answer read from the PACS"),
        ("--pacs-max-redirects", int, "N", limits.max_redirects, "redirects followed for one query"),
        ("--max-pages", int, "N", limits.max_pages, "pages read for one query (limit/offset paging)"),
        ("--max-studies", int, "N", limits.max_studies, "studies the study query may find (narrow it with --since)"),
        ("--max-series-per-study", int, "N", limits.max_series_per_study, "series of one study"),
        ("--max-instances-per-study", int, "N", limits.max_instances_per_study, "instances of one study"),
    )  # fmt: skip
    for flag, kind, metavar, default, text in bounds:
        parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{text} (default: {default:g})")
    parser.add_argument(
        "--allow-cross-origin-redirects",
        action="store_true",
        help="follow redirects to another scheme, host or port than the PACS URL's (default: refused, an error)",
    )


def _add_dicom_mapping_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        default=None,
        help="timezone of DICOM dates and times without TimezoneOffsetFromUTC (IANA name such as Europe/Paris, or "
        "+HHMM); default: none is assumed and such studies get a date without a time",
    )
    parser.add_argument(
        "--patient-id-system",
        default=None,
        metavar="URI",
        help="Identifier.system for PatientIDs without IssuerOfPatientID (default: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_target(parser: argparse.ArgumentParser) -> None:
    """``--database URL`` (the app in this process) or ``--server URL`` (a running server)."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--database",
        dest="database",
        default=None,
        help="database URL to write to directly (default: FHIR_IMAGING_DATABASE or sqlite:///fhir-imaging.db)",
    )
    target.add_argument(
        "--server", default=None, help="base URL of a running server, e.g. http://localhost:8080/baseR4"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_setup_problem(settings: Settings) -> str | None:
    """Why ``serve`` must not start with these settings, or None: settings that only work together, and a
    non-loopback host without authorization (--auth-issuer or --auth-introspection-url) and without
    --allow-anonymous. Names the secret's variable, never its value."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        return "--tls-cert and --tls-key go together: give both, or neither"
    url, client_id = settings.auth_introspection_url, settings.auth_introspection_client_id
    if url and not (client_id and settings.introspection_secret):
        return (
            "--auth-introspection-url needs --auth-introspection-client-id and the client secret in the environment "
            "variable FHIR_IMAGING_INTROSPECTION_SECRET (the endpoint answers authenticated clients only)"
        )
    if client_id and not url:
        return "--auth-introspection-client-id is for --auth-introspection-url: give both, or neither"
    authorized = settings.auth_issuer or url
    if not authorized and not settings.allow_anonymous and not is_loopback(settings.host):
        return (
            f"refusing to serve on {settings.host} without authorization: anyone who reaches the port could read "
            "and write every record. Give --auth-issuer URL (SMART on FHIR) or --auth-introspection-url URL, serve "
            "on 127.0.0.1, or say --allow-anonymous."
        )
    return None


def _open_store_or_explain(settings: Settings, command: str) -> Store | None:
    """The store, or None after one line on stderr saying why it cannot be opened (its password masked)."""
    from fhir_imaging.fhir.registry import load_registry
    from fhir_imaging.storage import open_store

    try:
        return open_store(settings, load_registry())
    except Exception as exc:
        reason = redact(str(exc) or type(exc).__name__, settings.database)
        print(
            f"fhir-imaging {command}: cannot open the database {redact_url(settings.database)}: {reason}",
            file=sys.stderr,
        )
        return None


def serve(settings: Settings) -> int:
    from fhir_imaging.server import run

    problem = serve_setup_problem(settings)
    if problem:
        print(f"fhir-imaging serve: {problem}", file=sys.stderr)
        return UNSAFE_SETUP
    configure_logging(settings.log_level)
    store = _open_store_or_explain(settings, "serve")  # fail fast on a bad database URL; migrate before workers
    if store is None:
        return DATABASE_UNUSABLE
    store.close()
    run(settings)
    return 0


def load(paths: list[Path], settings: Settings, server: str | None, batch_size: int) -> int:
    import asyncio

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from fhir_imaging.client import fhir_client
    from fhir_imaging.loader import Loader, find_files

    files = find_files(paths)
    missing = [path for path in files if not path.is_file()]
    if missing:
        print(f"fhir-imaging: no such file: {missing[0]}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    total = sum(path.stat().st_size for path in files)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("loading", total=total)

        class Advance:
            def advance(self, size: int) -> None:
                bar.advance(task, size)

        async def run() -> Any:
            async with fhir_client(server=server, settings=settings) as client:
                return await Loader(client, batch_size, Advance()).load(files)

        summary = asyncio.run(run())
    console.print(f"files: {summary.files}  loaded: {summary.loaded}  failed: {len(summary.failed)}")
    for failure in summary.failed:
        console.print(f"  [red]failed[/red] {escape(failure.source)}: {escape(failure.reason)}", highlight=False)
    return 1 if summary.failed else 0


def reindex(settings: Settings) -> int:
    configure_logging("warning")
    store = _open_store_or_explain(settings, "reindex")
    if store is None:
        return DATABASE_UNUSABLE
    try:
        count = store.reindex()
    except Exception as exc:
        reason = redact(str(exc) or type(exc).__name__, settings.database)
        print(f"fhir-imaging reindex: failed, nothing was changed: {reason}", file=sys.stderr)
        return DATABASE_UNUSABLE
    finally:
        store.close()
    print(f"reindexed {count} resources in {redact_url(settings.database)}", file=sys.stderr)
    return 0


def dicom(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    from fhir_imaging.dicom import commands as dicom_commands
    from fhir_imaging.dicom.dicomweb import parse_since

    try:
        options = dicom_commands.mapping_options(args.timezone, args.patient_id_system)
        since = parse_since(args.since) if getattr(args, "since", None) else None
        limits = dicom_commands.pacs_limits(args) if args.command == "sync-dicomweb" else None
    except ValueError as exc:
        parser.error(str(exc))
    target = {"server": args.server, "settings": settings, "options": options, "progress": not args.no_progress}
    if args.command == "import-dicom":
        return dicom_commands.run_import(args.paths, **target)
    return dicom_commands.run_sync(args.url, since=since, full=args.full, watch=args.watch, limits=limits, **target)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    flags = {setting.name: getattr(args, setting.name, None) for setting in SETTINGS}
    try:
        settings = load_settings(flags)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        return serve(settings)
    if args.command == "load":
        return load(args.paths, settings, args.server, args.batch_size)
    if args.command == "reindex":
        return reindex(settings)
    if args.command in ("import-dicom", "sync-dicomweb"):
        return dicom(args, settings, parser)
    parser.error(f"unknown command {args.command}")
    return 2
