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
    from fhir_imaging.client import RemoteServer
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
        if setting.repeated:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                type=setting.parse,
                action="append",
                default=None,
                metavar=setting.name.upper(),
                help=f"{setting.help} (default: none; environment: {setting.env})",
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
        "anything failed. With --database, resources outside transaction and batch Bundles are validated and "
        "indexed in worker processes and written in bulk, making the same database as the API would.",
    )
    load.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="files or folders (*.json, *.ndjson)")
    _add_target(load)
    load.add_argument("--batch-size", type=int, default=500, help="resources per transaction (default: 500)")
    load.add_argument(
        "--load-workers",
        type=int,
        default=None,
        metavar="N",
        help="with --database: processes that validate and index the resources (default: the cores the command may "
        "use, at most 8; 1: in the command's own process)",
    )
    reindex_command = commands.add_parser(
        "reindex",
        help="rebuild every search index from the stored resources",
        description="Rebuild the search index tables from the current version of every stored resource, in one "
        "transaction (searches keep answering from the old index until it commits).",
    )
    reindex_command.add_argument(
        "--database", default=None, help="database URL (default: FHIR_IMAGING_DATABASE or sqlite:///fhir-imaging.db)"
    )
    migrate_command = commands.add_parser(
        "migrate",
        help="bring the database schema up to date, then exit",
        description="Apply the schema migrations the database lacks and exit (0: up to date; 2: the database cannot "
        "be opened or a migration failed, and nothing of it was applied). Running it again changes nothing; two "
        "running at once migrate once (PostgreSQL: under an advisory lock; SQLite: under its write lock). Run it "
        "before starting servers with --no-migrate.",
    )
    migrate_command.add_argument(
        "--database", default=None, help="database URL (default: FHIR_IMAGING_DATABASE or sqlite:///fhir-imaging.db)"
    )
    _add_dicom_commands(commands)
    export = commands.add_parser(
        "export",
        help="run a Bulk Data export ($export) of a server into a folder of NDJSON files",
        description="Kick off a Bulk Data export on a FHIR server (this one or any other), wait for it as the "
        "server's Retry-After says, and download every file of its manifest into OUTDIR (TYPE-N.ndjson, with "
        "manifest.json), checking each file's line count. Exits 1 when a count differs, 2 when the export cannot "
        "be started or fails.",
    )
    export.add_argument("out", type=Path, metavar="OUTDIR", help="folder to write the files to (created)")
    export.add_argument(
        "--server", required=True, help="base URL of the FHIR server, e.g. http://localhost:8080/baseR4"
    )
    _add_server_auth(export)
    export.add_argument("--type", dest="types", default=None, help="resource types, comma-separated (_type)")
    export.add_argument("--since", default=None, help="only resources changed after this instant (_since)")
    export.add_argument(
        "--type-filter",
        action="append",
        default=[],
        metavar="SEARCH",
        help="a search such as ImagingStudy?modality=CT (_typeFilter; repeatable)",
    )
    export.add_argument("--elements", default=None, help="elements to keep, e.g. ImagingStudy.status (_elements)")
    level = export.add_mutually_exclusive_group()
    level.add_argument("--group", default=None, metavar="ID", help="export the members of Group ID")
    level.add_argument("--patients", action="store_true", help="export every patient's compartment")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    jwk = commands.add_parser(
        "public-jwk",
        help="print the public JWKS of a backend client's private key (for --auth-clients)",
        description="Print the public half of a PEM private key (RSA, or EC P-384) as a JWK Set, its kid the key's "
        "RFC 7638 thumbprint: the jwks to register for the client in the server's --auth-clients file.",
    )
    jwk.add_argument("key", type=Path, metavar="PEM", help="the client's private key")
    return parser


def _add_dicom_commands(commands: Any) -> None:
    """``import-dicom``, ``sync-dicomweb``, ``sync-dimse`` and ``listen`` (fhir_imaging/dicom; docs/dicom.md)."""
    from fhir_imaging.dicom.limits import MAX_DEFAULT_READ_WORKERS, PARALLEL_FROM

    imports = commands.add_parser(
        "import-dicom",
        help="import DICOM files as ImagingStudy and Patient resources",
        description="Read DICOM files (folders are walked, DICOMDIR indexes followed; headers only), group them by "
        "study and series, and write each study with its Patient in one transaction, merged with what the server "
        "holds: importing the same files twice changes nothing. Unreadable and non-DICOM files are reported and "
        "skipped. Exits 1 when a study could not be written, 2 when the FHIR server cannot be used.",
    )
    imports.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files, folders or DICOMDIR files")
    imports.add_argument(
        "--read-workers",
        type=_positive,
        default=None,
        metavar="N",
        help=f"processes that parse the files' headers when there are {PARALLEL_FROM} files or more (default: the "
        f"cores this process may use, at most {MAX_DEFAULT_READ_WORKERS}; 1: read in this process)",
    )
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
    _add_sync_options(sync)
    _add_pacs_limits(sync)
    _add_dicom_mapping_options(sync)
    dimse = commands.add_parser(
        "sync-dimse",
        help="create or update ImagingStudy resources from a PACS over DICOM (C-FIND)",
        description="Query a PACS with C-FIND (Study Root: studies, then each study's series and instances) as "
        "--calling-aet to --called-aet at HOST PORT, and create or update the same ImagingStudy and Patient "
        "resources sync-dicomweb makes of the same data, each study pointing at an Endpoint for the PACS's DICOM "
        "address (dicom://AET@HOST:PORT, connection type dicom-dimse). Runs are incremental and idempotent. The "
        "PACS must accept C-FIND from the calling AE title. Exits 2 when the PACS or the FHIR server cannot be "
        "used.",
    )
    dimse.add_argument("host", metavar="HOST", help="host name or address of the PACS's DICOM port")
    dimse.add_argument("port", metavar="PORT", type=_port, help="the PACS's DICOM port, e.g. 104 or 4242")
    dimse.add_argument("--called-aet", required=True, metavar="AET", help="the PACS's AE title")
    dimse.add_argument(
        "--calling-aet", default="FHIRIMAGING", metavar="AET", help="our AE title (default: FHIRIMAGING)"
    )
    _add_target(dimse)
    _add_sync_options(dimse)
    _add_dimse_limits(dimse)
    _add_dicom_mapping_options(dimse)
    _add_listen_command(commands)


def _add_listen_command(commands: Any) -> None:
    """``listen``: the C-STORE SCP (fhir_imaging/dicom/listener.py; docs/dicom.md, *listen*)."""
    from fhir_imaging.dicom.limits import MEBIBYTE
    from fhir_imaging.dicom.listener import ListenOptions

    defaults = ListenOptions()
    listen = commands.add_parser(
        "listen",
        help="receive DICOM instances (C-STORE) and write their studies as ImagingStudy resources",
        description="Run a DICOM storage SCP (C-STORE for every storage SOP class, any transfer syntax, and "
        "C-ECHO) as --aet on --host:--port. Received instances are read (headers only), grouped by study, and each "
        "study is written with its Patient, merged with what the server holds, once its association ends or after "
        "--quiet-period seconds without a new instance of it. Files are dropped unless --store-dir. Runs until "
        "Ctrl-C or SIGTERM, then writes what it holds and prints a summary. DIMSE has no authentication: "
        "--allow-aet and the network are the only gates.",
    )
    listen.add_argument(
        "--host", default=defaults.host, help=f"interface to listen on (default: {defaults.host}; 0.0.0.0: all)"
    )
    listen.add_argument("--port", type=int, default=defaults.port, help=f"TCP port (default: {defaults.port})")
    listen.add_argument("--aet", default=defaults.aet, metavar="AET", help=f"our AE title (default: {defaults.aet})")
    listen.add_argument(
        "--allow-aet",
        action="append",
        metavar="AET",
        help="a calling AE title to accept (repeat for several); associations from others are rejected (default: any)",
    )
    listen.add_argument(
        "--store-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each received file as DIR/StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm (default: "
        "files are dropped once their header is read)",
    )
    bounds = (
        ("--quiet-period", float, "SECONDS", defaults.quiet_period, "seconds without a new instance of a study "
         "after which it is written even if its association is still open"),
        ("--dimse-timeout", float, "SECONDS", defaults.timeout, "seconds for negotiating an association, for each "
         "message, for one PDU to arrive, and an association may stay idle"),
        ("--max-pdu-size", int, "BYTES", defaults.max_pdu_bytes, "Maximum Length announced to senders; a longer "
         "PDU (or one over 256 KiB before the association) closes the connection"),
        ("--max-dataset-mb", int, "MB", defaults.max_dataset_bytes // MEBIBYTE, "largest dataset received; a bigger "
         "one aborts its association"),
        ("--max-associations", int, "N", defaults.max_associations, "associations at once; more are rejected"),
        ("--max-held-instances", int, "N", defaults.max_held, "instances held before their studies are written, "
         "all studies together; at the bound the oldest studies are written"),
        ("--retry-for", float, "SECONDS", defaults.retry_for, "seconds a study is tried again (backoff from 1 to "
         "30 seconds) while the FHIR server is down or answers 5xx or 429, held meanwhile; then it is dropped "
         "(its files stay in --store-dir)"),
    )  # fmt: skip
    for flag, kind, metavar, default, text in bounds:
        listen.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{text} (default: {default:g})")
    _add_target(listen)
    _add_dicom_mapping_options(listen)


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(text)
    return port


def _add_sync_options(parser: argparse.ArgumentParser) -> None:
    """What ``sync-dicomweb`` and ``sync-dimse`` share: which studies, how often."""
    parser.add_argument("--since", default=None, help="only studies from this date on: 2024-06-15, or 7d for 7 days")
    parser.add_argument(
        "--watch", type=float, default=None, metavar="SECONDS", help="sync again every SECONDS until interrupted"
    )
    parser.add_argument(
        "--full", action="store_true", help="read every study again, not only those whose instance count changed"
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="after the pass, mark the studies of this PACS's Endpoint that the PACS no longer has: the Endpoint "
        "reference is removed and, with none left, status available becomes unknown (never deleted; a study that "
        "comes back is available again). Not with --since",
    )


def _add_dimse_limits(parser: argparse.ArgumentParser) -> None:
    """The bounds ``sync-dimse`` puts on the PACS (``DimseLimits``; docs/dicom.md, *sync-dimse*)."""
    from fhir_imaging.dicom.limits import DimseLimits

    limits = DimseLimits()
    bounds = (
        ("--pacs-timeout", float, "SECONDS", limits.timeout, "seconds for connecting, negotiating the association, "
         "each DIMSE message and one whole C-FIND query"),
        ("--max-pdu-size", int, "BYTES", limits.max_pdu_bytes, "Maximum Length announced to the PACS; a PDU "
         "longer than it (or 256 KiB) ends the query"),
        ("--max-studies", int, "N", limits.max_studies, "studies the study query may find (narrow it with --since)"),
        ("--max-series-per-study", int, "N", limits.max_series_per_study, "series of one study"),
        ("--max-instances-per-study", int, "N", limits.max_instances_per_study, "instances of one study"),
    )  # fmt: skip
    for flag, kind, metavar, default, text in bounds:
        parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{text} (default: {default:g})")


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
    _add_server_auth(parser)


def _add_server_auth(parser: argparse.ArgumentParser) -> None:
    """How a command authenticates to ``--server`` (SMART Backend Services, or a given token)."""
    auth = parser.add_argument_group(
        "authorization with --server",
        "SMART Backend Services: the command obtains access tokens itself (and new ones before they expire) with "
        "a client assertion signed by --private-key, from the token endpoint the server's SMART configuration "
        "names; or it sends the token it is given.",
    )
    auth.add_argument("--client-id", default=None, help="the client id the server's --auth-clients registers")
    auth.add_argument(
        "--private-key", default=None, type=Path, metavar="PEM", help="the client's private key (RSA, or EC P-384)"
    )
    auth.add_argument(
        "--key-id", default=None, help="the kid of --private-key as registered (default: its RFC 7638 thumbprint)"
    )
    auth.add_argument("--scope", default="system/*.cruds", help="scopes to ask for (default: system/*.cruds)")
    auth.add_argument(
        "--token-url", default=None, help="token endpoint (default: from the server's SMART configuration)"
    )
    auth.add_argument(
        "--token",
        default=None,
        help="a bearer access token to send as it is (better: the FHIR_IMAGING_ACCESS_TOKEN environment variable, "
        "which other users of the machine cannot see)",
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
    non-loopback host without authorization (--auth-issuer, --auth-introspection-url or --auth-clients) and without
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
    authorized = settings.auth_issuer or url or settings.auth_clients
    if not authorized and not settings.allow_anonymous and not is_loopback(settings.host):
        return (
            f"refusing to serve on {settings.host} without authorization: anyone who reaches the port could read "
            "and write every record. Give --auth-issuer URL (SMART on FHIR), --auth-introspection-url URL or "
            "--auth-clients FILE (backend clients), serve on 127.0.0.1, or say --allow-anonymous."
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


def remote_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RemoteServer | None:
    """``--server`` with its authorization options (None without ``--server``); a usage error for options that do
    not go together or a key that cannot be used."""
    import os

    from fhir_imaging.client import RemoteServer

    token = args.token or os.environ.get("FHIR_IMAGING_ACCESS_TOKEN") or None
    if not args.server:
        if args.client_id or args.private_key or args.token:
            parser.error("--client-id, --private-key and --token go with --server")
        return None
    if args.client_id or args.private_key:
        if not (args.client_id and args.private_key):
            parser.error("--client-id and --private-key go together")
        if args.token:
            parser.error("give --token, or --client-id with --private-key, not both")
        from fhir_imaging.auth.backend_client import BackendServicesAuth
        from fhir_imaging.auth.keys import load_private_key

        try:
            key = load_private_key(args.private_key.read_bytes())
        except (OSError, ValueError) as exc:
            parser.error(f"--private-key {args.private_key}: {exc}")
        auth = BackendServicesAuth(args.server, args.client_id, key, args.scope, args.key_id, args.token_url)
        return RemoteServer(args.server, auth)
    if token:
        from fhir_imaging.auth.backend_client import StaticTokenAuth

        return RemoteServer(args.server, StaticTokenAuth(token))
    return RemoteServer(args.server)


def bulk_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import asyncio

    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from fhir_imaging.client import TokenError
    from fhir_imaging.export.client import ExportError, run_export

    server = remote_server(args, parser)
    assert server is not None
    params = [("_outputFormat", "application/fhir+ndjson")]
    params += [(name, value) for name, value in (("_type", args.types), ("_since", args.since),
                                                 ("_elements", args.elements)) if value]  # fmt: skip
    params += [("_typeFilter", value) for value in args.type_filter]
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console, transient=True,
        disable=args.no_progress,
    ) as bar:  # fmt: skip
        task = bar.add_task("waiting for the export", total=None)
        try:
            summary = asyncio.run(
                run_export(
                    server,
                    args.out,
                    params,
                    group=args.group,
                    patients=args.patients,
                    report=lambda text: bar.update(task, description=text),
                    advance=lambda size: bar.update(task, description="downloading", advance=size),
                )
            )
        except (ExportError, TokenError, httpx.HTTPError) as exc:
            print(f"fhir-imaging export: {exc}", file=sys.stderr)
            return 2
    for line in summary.lines():
        print(line)
    return 1 if summary.mismatches else 0


def public_jwk(path: Path) -> int:
    import json

    from fhir_imaging.auth.keys import load_private_key
    from fhir_imaging.auth.keys import public_jwk as jwk_of

    try:
        key = load_private_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"fhir-imaging public-jwk: {path}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"keys": [jwk_of(key)]}, indent=2))
    return 0


def serve(settings: Settings) -> int:
    from fhir_imaging.server import run

    problem = serve_setup_problem(settings)
    if problem:
        print(f"fhir-imaging serve: {problem}", file=sys.stderr)
        return UNSAFE_SETUP
    if settings.auth_clients:
        from fhir_imaging.auth.clients import load_clients

        try:
            load_clients(settings.auth_clients)
        except (OSError, ValueError) as exc:
            print(f"fhir-imaging serve: --auth-clients: {exc}", file=sys.stderr)
            return UNSAFE_SETUP
    configure_logging(settings.log_level)
    store = _open_store_or_explain(settings, "serve")  # fail fast on a bad database URL; migrate before workers
    if store is None:
        return DATABASE_UNUSABLE
    store.close()
    run(settings)
    return 0


def load(
    paths: list[Path], settings: Settings, server: RemoteServer | None, batch_size: int, workers: int | None = None
) -> int:
    import asyncio
    from contextlib import nullcontext

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
    if batch_size < 1 or (workers is not None and workers < 1):
        print("fhir-imaging load: --batch-size and --load-workers must be 1 or more", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    total = sum(path.stat().st_size for path in files)
    bulk = server is None and not settings.enforce_references and not settings.audit_log
    executor: Any = None
    if bulk:  # the worker processes start first: before this process runs any thread (bulk_load.preparers)
        from fhir_imaging.bulk_load import bulk_context, default_workers, preparers
        from fhir_imaging.storage.dialect import POSTGRES, SQLITE

        count = workers or default_workers()
        dialect = SQLITE if settings.database.startswith("sqlite:") else POSTGRES
        executor = preparers(count, dialect.placeholder)
    with bulk_context(executor) if executor is not None else nullcontext(), Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("loading", total=total)

        class Advance:
            def advance(self, size: int) -> None:
                bar.advance(task, size)

        async def run() -> Any:
            if executor is None:
                async with fhir_client(server=server, settings=settings) as client:
                    return await Loader(client, batch_size, Advance()).load(files)
            from fhir_imaging.bulk_load import BulkLoader
            from fhir_imaging.client import in_process_app

            async with in_process_app(settings) as (client, app):
                api = Loader(client, batch_size, Advance())
                store = app.state.service.store
                return await BulkLoader(api, store, executor, batch_size, 2 * count).load(files)

        summary = asyncio.run(run())
    console.print(f"files: {summary.files}  loaded: {summary.loaded}  failed: {len(summary.failed)}")
    for failure in summary.failed:
        console.print(f"  [red]failed[/red] {escape(failure.source)}: {escape(failure.reason)}", highlight=False)
    return 1 if summary.failed else 0


def migrate(settings: Settings) -> int:
    from dataclasses import replace

    from fhir_imaging.storage.schema import SCHEMA_VERSION

    configure_logging("warning")
    store = _open_store_or_explain(replace(settings, no_migrate=False), "migrate")
    if store is None:
        return DATABASE_UNUSABLE
    found = store.schema_found
    store.close()
    where = redact_url(settings.database)
    if found >= SCHEMA_VERSION:
        print(f"the schema of {where} is up to date (version {found})", file=sys.stderr)
    else:
        print(f"migrated {where} from schema version {found} to {SCHEMA_VERSION}", file=sys.stderr)
    return 0


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
        if args.command == "sync-dicomweb":
            pacs_limits = dicom_commands.pacs_limits(args)
        elif args.command == "sync-dimse":
            from fhir_imaging.dicom.dimse import check_ae_title

            dimse_limits = dicom_commands.dimse_limits(args)
            called_aet = check_ae_title(args.called_aet, "--called-aet")
            calling_aet = check_ae_title(args.calling_aet, "--calling-aet")
        elif args.command == "listen":
            listen_options = dicom_commands.listen_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    server = remote_server(args, parser)
    progress = not args.no_progress
    if args.command == "listen":
        return dicom_commands.run_listen(listen_options, server=server, settings=settings, mapping=options)
    if args.command == "import-dicom":
        return dicom_commands.run_import(
            args.paths,
            server=server,
            settings=settings,
            options=options,
            progress=progress,
            read_workers=args.read_workers,
        )
    if args.reconcile and since is not None:
        parser.error("--reconcile needs the PACS's whole study list: it does not go with --since")
    run = dicom_commands.SyncRun(
        server, settings, options, since=since, full=args.full, progress=progress, reconcile=args.reconcile
    )
    if args.command == "sync-dicomweb":
        from fhir_imaging.dicom.dicomweb import QidoReader
        from fhir_imaging.dicom.pacs import PacsError

        try:
            reader = QidoReader(args.url, pacs_limits)
        except PacsError as exc:
            print(f"fhir-imaging sync-dicomweb: {exc}", file=sys.stderr)
            return 2
        try:
            return dicom_commands.run_sync("sync-dicomweb", run, reader, watch=args.watch)
        finally:
            reader.close()
    from fhir_imaging.dicom.cfind import CFindReader

    finder = CFindReader(args.host, args.port, called_aet, calling_aet, dimse_limits)
    try:
        return dicom_commands.run_sync("sync-dimse", run, finder, watch=args.watch)
    finally:
        finder.close()


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
    if args.command == "reindex":
        return reindex(settings)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "public-jwk":
        return public_jwk(args.key)
    if args.command == "export":
        return bulk_export(args, parser)
    from fhir_imaging.client import TokenError

    try:
        if args.command == "load":
            return load(args.paths, settings, remote_server(args, parser), args.batch_size, args.load_workers)
        if args.command in ("import-dicom", "sync-dicomweb", "sync-dimse", "listen"):
            return dicom(args, settings, parser)
    except TokenError as exc:
        print(f"fhir-imaging {args.command}: no access token: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2
