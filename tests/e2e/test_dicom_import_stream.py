"""import-dicom writes each study while the next files are read (fhir_imaging/dicom/stream.py): the studies come out
as writing them after all the reads made them, even when a study's files are mixed with another's; an error in the
writes stops the reads and the command.

Spec: https://hl7.org/fhir/R4/imagingstudy.html, https://hl7.org/fhir/R4/http.html#transaction.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from fhir_imaging.cli import main
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.importer import Stopped, import_dicom, import_records, read_paths
from fhir_imaging.dicom.limits import PARALLEL_FROM
from fhir_imaging.dicom.mapping import InstanceRecord, MappingOptions
from fhir_imaging.dicom.stream import StudyStream
from fhir_imaging.dicom.writer import Tally

pytestmark = pytest.mark.e2e


def settings_for(tmp_path: Path, name: str) -> Settings:
    return Settings(database=f"sqlite:///{tmp_path / name}", sqlite_synchronous="normal")


def write_ct(path: Path, study: str, series: str, number: int, **changes: Any) -> Path:
    """CT_small.dcm as instance ``number`` of ``series`` in ``study`` (a new SOPInstanceUID), with ``changes``."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def records_of(*paths: Path) -> list[InstanceRecord]:
    return read_paths(paths, MappingOptions(), workers=1).records


def content(settings: Settings) -> list[dict[str, Any]]:
    """Every ImagingStudy and Patient, without what the server sets (ids, meta) and with the subject's type only."""

    async def run() -> list[dict[str, Any]]:
        found = []
        async with fhir_client(settings=settings) as client:
            for kind in ("ImagingStudy", "Patient"):
                response = await client.get(f"{kind}?_count=1000")
                found += [entry["resource"] for entry in response.json().get("entry", [])]
        for resource in found:
            resource.pop("id"), resource.pop("meta")
            if "subject" in resource:
                resource["subject"] = resource["subject"]["reference"].split("/")[0]
        return sorted(found, key=lambda resource: json.dumps(resource, sort_keys=True))

    return asyncio.run(run())


def write_at_once(settings: Settings, *batches: list[InstanceRecord]) -> list[Tally]:
    """Each batch grouped and written after all its records are in (the way import-dicom wrote before streaming)."""

    async def run() -> list[Tally]:
        tallies = []
        async with fhir_client(settings=settings) as client:
            for batch in batches:
                read = read_paths([], MappingOptions())
                read.records = batch
                tallies.append((await import_records(client, read)).tally)
        return tallies

    return asyncio.run(run())


def write_streaming(settings: Settings, *parts: list[InstanceRecord]) -> Tally:
    """The records given to a ``StudyStream`` part after part, each part once the studies it closed are written."""

    async def run() -> Tally:
        stream = StudyStream()
        async with fhir_client(settings=settings) as client:
            writing = asyncio.create_task(stream.run(client))
            for part in parts:
                stream.add(part)
                while not stream.idle:
                    await asyncio.sleep(0.01)
            stream.finish()
            await writing
        return stream.tally

    return asyncio.run(run())


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[list[InstanceRecord], list[InstanceRecord], InstanceRecord]:
    """Study A's first instance, then study B, then more of A (its series' second instance on the other side: the
    series laterality the first instance gives is not the study's); and a third instance of A."""
    study_a, series_a, study_b = generate_uid(), generate_uid(), generate_uid()
    a1 = write_ct(tmp_path / "files" / "a1.dcm", study_a, series_a, 1, ImageLaterality="L")
    b1 = write_ct(tmp_path / "files" / "b1.dcm", study_b, generate_uid(), 1, PatientID="OTHER")
    a2 = write_ct(tmp_path / "files" / "a2.dcm", study_a, series_a, 2, ImageLaterality="R")
    a0 = write_ct(tmp_path / "files" / "a0.dcm", study_a, generate_uid(), 1, ImageLaterality="L")
    first, second = records_of(a1, b1), records_of(a2)
    (earlier,) = records_of(a0)
    return first, second, earlier


def test_a_study_written_before_more_of_its_files_came_ends_as_one_write_of_them_all(
    tmp_path: Path, mixed: tuple[list[InstanceRecord], list[InstanceRecord], InstanceRecord]
) -> None:
    first, second, _ = mixed
    at_once, streamed = settings_for(tmp_path, "at-once.db"), settings_for(tmp_path, "streamed.db")
    (expected,) = write_at_once(at_once, first + second)
    tally = write_streaming(streamed, first, second)
    assert content(streamed) == content(at_once)
    assert tally == expected and tally.studies_created == 2 and tally.instances_added == 3
    studies = [resource for resource in content(streamed) if resource["resourceType"] == "ImagingStudy"]
    assert all("laterality" not in series for study in studies for series in study["series"])


def test_more_files_of_a_study_the_server_had_are_merged_as_one_write_of_them_all(
    tmp_path: Path, mixed: tuple[list[InstanceRecord], list[InstanceRecord], InstanceRecord]
) -> None:
    first, second, earlier = mixed
    at_once, streamed = settings_for(tmp_path, "at-once.db"), settings_for(tmp_path, "streamed.db")
    _, expected = write_at_once(at_once, [earlier], first + second)
    write_at_once(streamed, [earlier])
    tally = write_streaming(streamed, first, second)
    assert content(streamed) == content(at_once)
    assert tally == expected and (tally.studies_created, tally.studies_updated) == (1, 1)
    # and again: nothing changes
    assert write_streaming(streamed, first, second) == Tally(studies_unchanged=2)
    assert content(streamed) == content(at_once)


def test_the_records_are_taken_chunk_by_chunk_and_the_reads_stop_when_told(tmp_path: Path) -> None:
    study = generate_uid()
    paths = [write_ct(tmp_path / f"{n:02d}.dcm", study, generate_uid(), n) for n in range(40)]
    taken: list[InstanceRecord] = []
    read = read_paths(paths, MappingOptions(), take=taken.extend)
    assert taken == read.records and len(taken) == 40
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        read_paths(paths, MappingOptions(), stop=stop)


class _NoTransactions(BaseHTTPRequestHandler):
    """A FHIR server that finds nothing and does not do transactions (501)."""

    posts = 0

    def do_GET(self) -> None:
        self._answer(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})

    def do_POST(self) -> None:
        type(self).posts += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        issue = {"severity": "error", "code": "not-supported"}
        self._answer(501, {"resourceType": "OperationOutcome", "issue": [issue]})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def no_transactions_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoTransactions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/baseR4"
    finally:
        server.shutdown()
        server.server_close()


def many_studies(folder: Path, files: int) -> Path:
    """``files`` files, 10 instances a study, each study in its folder."""
    study = series = ""
    for n in range(files):
        if n % 10 == 0:
            study, series = generate_uid(), generate_uid()
        write_ct(folder / f"s{n // 10:04d}" / f"{n % 10}.dcm", study, series, n % 10 + 1)
    return folder


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``PARALLEL_FROM`` files (the reader processes read them), 10 a study."""
    return many_studies(tmp_path_factory.mktemp("many") / "files", PARALLEL_FROM)


def test_an_error_in_the_writes_stops_the_reads_and_the_command(many: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = many
    _NoTransactions.posts = 0
    with no_transactions_server() as url:
        with pytest.raises(Exception, match="does not support transactions"):
            asyncio.run(import_dicom([folder], server=url, read_workers=2))
        assert _NoTransactions.posts == 1  # the first study's write failed: no other was tried
        code = main(["import-dicom", str(folder), "--server", url, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "does not support transactions" in err and "files:" not in out


def test_an_import_of_many_files_with_reader_processes_equals_one_written_after_the_reads(
    tmp_path: Path, many: Path
) -> None:
    folder = many
    at_once, streamed = settings_for(tmp_path, "at-once.db"), settings_for(tmp_path, "streamed.db")
    (expected,) = write_at_once(at_once, read_paths([folder], MappingOptions(), workers=2).records)
    summary = asyncio.run(import_dicom([folder], settings=streamed, read_workers=2))
    assert summary.tally == expected and summary.studies == PARALLEL_FROM // 10 and summary.patients == 1
    assert content(streamed) == content(at_once)
    again = asyncio.run(import_dicom([folder], settings=streamed, read_workers=2))
    assert again.tally == Tally(studies_unchanged=PARALLEL_FROM // 10)
