"""The ``fhir-imaging`` command. Parses arguments and calls the services; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

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
    return parser


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
    parser.error(f"unknown command {args.command}")
    return 2
