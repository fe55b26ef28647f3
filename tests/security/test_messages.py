"""What the commands print: no password of a database URL, no traceback, one line per log record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_imaging.logs import escape_control, redact, redact_url

PASSWORD = "s3cr3t-Pa55"
UNREACHABLE = f"postgresql://imaging:{PASSWORD}@127.0.0.1:1/fhir"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FHIR_IMAGING_")}
    return subprocess.run(
        [sys.executable, "-m", "fhir_imaging", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@db:5432/fhir", "postgresql://user:***@db:5432/fhir"),
        ("postgresql://user@db/fhir", "postgresql://user@db/fhir"),
        ("postgresql://user:p@ss@db/fhir?sslmode=require", "postgresql://user:***@db/fhir?sslmode=require"),
        ("postgresql://db/fhir?user=u&password=secret&x=1", "postgresql://db/fhir?user=u&password=***&x=1"),
        ("https://bot:token@fhir.example.org/baseR4", "https://bot:***@fhir.example.org/baseR4"),
        ("http://pacs:8042/dicom-web?q=a@b", "http://pacs:8042/dicom-web?q=a@b"),
        ("sqlite:///fhir-imaging.db", "sqlite:///fhir-imaging.db"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_masks_the_password_wherever_a_message_repeats_it() -> None:
    message = f"cannot use {UNREACHABLE}: authentication with '{PASSWORD}' failed"
    assert PASSWORD not in redact(message, UNREACHABLE)
    assert "postgresql://imaging:***@127.0.0.1:1/fhir" in redact(message, UNREACHABLE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/baseR4/Patient/123", "/baseR4/Patient/123"),
        ("/baseR4/Patient/\nforged 200", "/baseR4/Patient/\\nforged 200"),
        ("a\r\tb\x1b[31mc\x7f\x85", "a\\r\\tb\\x1b[31mc\\x7f\\x85"),
        ("a\u2028b\u202ec", "a\\u2028b\\u202ec"),
        ("already \\n escaped", "already \\\\n escaped"),
        ("ImagingStudy?patient.name=Zoë", "ImagingStudy?patient.name=Zoë"),
    ],
)
def test_escape_control(text: str, expected: str) -> None:
    assert escape_control(text) == expected
    assert "\n" not in escape_control(text)


def test_serve_with_an_unknown_database_scheme_prints_no_password(tmp_path: Path) -> None:
    result = _run("serve", "--port", "1", "--database", f"mysql://imaging:{PASSWORD}@127.0.0.1/fhir", cwd=tmp_path)
    assert result.returncode == 2
    assert PASSWORD not in result.stdout + result.stderr
    assert "mysql://imaging:***@127.0.0.1/fhir" in result.stderr


def test_serve_with_an_unreachable_postgresql_prints_no_password(tmp_path: Path) -> None:
    result = _run("serve", "--port", "1", "--database", UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 2
    assert PASSWORD not in result.stdout + result.stderr
    assert "cannot open the database postgresql://imaging:***@127.0.0.1:1/fhir" in result.stderr


def test_reindex_with_an_unreachable_postgresql_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _run("reindex", "--database", UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 2  # as serve
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fhir-imaging reindex: cannot open the database postgresql://imaging:***@127.0.0.1:1/fhir")


def test_reindex_with_an_unusable_sqlite_path_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = _run("reindex", "--database", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("fhir-imaging reindex: cannot open the database sqlite:///")
