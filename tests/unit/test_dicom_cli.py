"""The ``import-dicom`` and ``sync-dicomweb`` commands: arguments, exit codes, a PACS that is down.

See docs/dicom.md. What needs a server with search and conditional transactions is in tests/e2e/test_dicom_import.py.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from fhir_imaging.cli import build_parser, main
from fhir_imaging.client import fhir_client
from fhir_imaging.dicom.commands import parse_timezone
from fhir_imaging.dicom.dicomweb import PacsError, QidoReader, parse_since
from tests.e2e.server import free_port


def test_import_dicom_arguments() -> None:
    args = build_parser().parse_args(
        ["import-dicom", "a.dcm", "folder", "--server", "http://localhost:8080/baseR4", "--timezone", "Europe/Paris"]
    )
    assert args.command == "import-dicom" and args.paths == ["a.dcm", "folder"]
    assert args.server == "http://localhost:8080/baseR4" and args.database is None
    assert args.timezone == "Europe/Paris" and args.patient_id_system is None and not args.no_progress
    assert args.read_workers is None  # the default: importer.default_read_workers()
    assert build_parser().parse_args(["import-dicom", "x", "--read-workers", "3"]).read_workers == 3


def test_listen_retry_for() -> None:
    assert build_parser().parse_args(["listen"]).retry_for == 600.0
    assert build_parser().parse_args(["listen", "--retry-for", "0"]).retry_for == 0.0


def test_sync_dicomweb_arguments() -> None:
    args = build_parser().parse_args(
        ["sync-dicomweb", "http://pacs/dicom-web", "--database", "sqlite:///x.db", "--since", "7d", "--watch", "30"]
    )
    assert (args.url, args.database, args.since, args.watch, args.full) == (
        "http://pacs/dicom-web", "sqlite:///x.db", "7d", 30.0, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["import-dicom"],
        ["import-dicom", "x", "--server", "http://a", "--database", "sqlite:///b.db"],
        ["sync-dicomweb"],
        ["sync-dicomweb", "http://pacs", "--since", "last week"],
        ["sync-dicomweb", "http://pacs", "--watch", "often"],
        ["import-dicom", "x", "--timezone", "Mars/Olympus"],
        ["import-dicom", "x", "--read-workers", "0"],
        ["listen", "--retry-for", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2024-06-15", date(2024, 6, 15)), ("20240615", date(2024, 6, 15)), ("7d", date(2024, 6, 8))],
)
def test_since(text: str, expected: date) -> None:
    assert parse_since(text, today=date(2024, 6, 15)) == expected


def test_timezones() -> None:
    assert str(parse_timezone("Europe/Paris")) == "Europe/Paris"
    assert parse_timezone("-0330").utcoffset(None).total_seconds() == -12600  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown timezone"):
        parse_timezone("Nowhere/City")


def test_a_pacs_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PacsError, match=r"cannot reach the PACS at .* \(the study query\): connection refused"):
        QidoReader(url).studies()


def test_sync_from_a_pacs_that_is_down_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path / 'sync.db'}"
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert main(["sync-dicomweb", url, "--database", database, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"fhir-imaging sync-dicomweb: cannot reach the PACS at {url}" in err and "Traceback" not in err

    async def written() -> int:
        async with fhir_client(database=database) as client:
            history = (await client.get("_history")).json()
            return len(history.get("entry", []))

    assert asyncio.run(written()) == 0


def test_import_of_nothing_importable_reports_every_skipped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    database = f"sqlite:///{tmp_path / 'import.db'}"
    assert main(["import-dicom", str(tmp_path / "notes.txt"), str(tmp_path / "gone.dcm"), "--database", database]) == 0
    out = capsys.readouterr().out
    assert "files: 2 read, 0 instances, 0 DICOMDIR, 2 skipped" in out
    assert f"skipped {tmp_path / 'notes.txt'}: not a DICOM file" in out
    assert f"skipped {tmp_path / 'gone.dcm'}: no such file" in out
    assert "studies: 0 (0 created, 0 updated, 0 unchanged, 0 failed)" in out


def test_sync_dimse_arguments() -> None:
    args = build_parser().parse_args(
        ["sync-dimse", "pacs", "104", "--called-aet", "PACS", "--server", "http://fhir/baseR4", "--client-id", "c",
         "--private-key", "key.pem", "--since", "7d", "--max-studies", "5"]
    )  # fmt: skip
    assert (args.host, args.port, args.called_aet, args.calling_aet) == ("pacs", 104, "PACS", "FHIRIMAGING")
    assert (args.server, args.client_id, str(args.private_key), args.max_studies) == (
        "http://fhir/baseR4",
        "c",
        "key.pem",
        5,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sync-dimse", "pacs", "104"],
        ["sync-dimse", "pacs", "70000", "--called-aet", "PACS"],
        ["sync-dimse", "pacs", "104", "--called-aet", "WAY-TOO-LONG-AE-TITLE"],
        ["sync-dimse", "pacs", "104", "--called-aet", "PACS", "--calling-aet", "BACK\\SLASH"],
        ["sync-dimse", "pacs", "104", "--called-aet", "PACS", "--max-pdu-size", "10"],
        ["sync-dimse", "pacs", "104", "--called-aet", "PACS", "--client-id", "c"],
    ],
)
def test_bad_sync_dimse_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err
