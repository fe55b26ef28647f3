"""The ``fhir-imaging`` command. Parses arguments and calls the services; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fhir_imaging import FHIR_VERSION, __version__
from fhir_imaging.config import SETTINGS, Settings, load_settings, to_environ

SERVE_SETTINGS = tuple(SETTINGS)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for setting in SERVE_SETTINGS:
        default = "none" if setting.default is None else setting.default
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
        description=f"A FHIR R{FHIR_VERSION} server for medical imaging, served at http://HOST:PORT/baseR4.",
        epilog="Every option also reads an environment variable FHIR_IMAGING_<OPTION>; an option wins over it.",
    )
    parser.add_argument("--version", action="version", version=f"fhir-imaging {__version__} (FHIR {FHIR_VERSION})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the FHIR server",
        description="Run the FHIR server at http://HOST:PORT/baseR4 (CapabilityStatement at /baseR4/metadata).",
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
    return parser


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


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def serve(settings: Settings) -> int:
    import uvicorn

    from fhir_imaging.storage import open_store

    _configure_logging(settings.log_level)
    try:
        open_store(settings).close()  # fail fast on a bad database URL, and migrate before workers start
    except Exception as exc:
        print(f"fhir-imaging: cannot open the database {settings.database}: {exc}", file=sys.stderr)
        return 2
    options = {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False}
    if settings.workers > 1:
        os.environ.update(to_environ(settings))
        uvicorn.run("fhir_imaging.app:app_from_environment", factory=True, workers=settings.workers, **options)
    else:
        from fhir_imaging.app import create_app

        uvicorn.run(create_app(settings), **options)
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
    parser.error(f"unknown command {args.command}")
    return 2
