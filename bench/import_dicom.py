"""Benchmark of reading files for import-dicom (docs/dicom.md): ``python -m bench.import_dicom [--files 2000]
[--workers N] [--synthetic] [--write]``.

The files are copies of pydicom's own test files (CT, MR in explicit and implicit VR, NM JPEG 2000, secondary
capture, a segmentation with its sequences), each with new study, series and instance UIDs and patients, 25
instances per series and 4 series per study (``--synthetic``: bench.dicom's small generated CT files). Four ways of
reading the same folder, in the same run, headers only:

- ``whole``: the way import-dicom read first: pydicom reads every element of the header and the mapping takes
  pydicom's converted values (``dcmread(stop_before_pixels=True)``), one file after the other;
- ``before``: the header read that ``header.read_file_header`` replaced, in this process: pydicom's ``dcmread``
  with ``specific_tags`` (a whole ``Dataset`` of the mapped attributes), plain values decoded directly;
- ``fast``: ``importer.read_paths`` in this process (``header.read_file_header``: the file's first bytes, pydicom's
  element reader, no ``Dataset``);
- ``fast_parallel``: the same with ``--workers`` reader processes (default: import-dicom's default).

All four must give the same records. Each prints wall-clock files per second and CPU seconds per 1,000 files (this
process's user + system time, plus the reader processes' own, which they report; a machine shared with other work
changes the CPU figure less than the wall clock). ``--write`` also writes the studies read into a fresh SQLite
database through the in-process FHIR API (``import_records``, as ``import-dicom --database``) and times that apart.
Prints one JSON object, with the ratios to ``whole`` and to ``before``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from bench import dicom as bench_dicom
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom import reading
from fhir_imaging.dicom.header import Header, read_header
from fhir_imaging.dicom.importer import (
    ReadResult,
    check_complete,
    default_read_workers,
    import_records,
    read_paths,
    walk,
)
from fhir_imaging.dicom.mapping import InstanceRecord, MappingOptions, from_dicom_dataset

TEMPLATES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "SC_rgb_small_odd.dcm",
    "liver_1frame.dcm",
)
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 25, 4, 10


def write_files(folder: Path, count: int) -> None:
    """``count`` copies of ``TEMPLATES`` (one template per study, in turn) under new UIDs."""
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    templates = [pydicom.dcmread(test_files / name) for name in TEMPLATES]
    per_study = PER_SERIES * SERIES_PER_STUDY
    study_uid = series_uid = ""
    for index in range(count):
        study, within = divmod(index, per_study)
        series, number = divmod(within, PER_SERIES)
        if within == 0:
            study_uid = generate_uid()
        if number == 0:
            series_uid = generate_uid()
        ds = templates[study % len(templates)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = f"BENCH{study // STUDIES_PER_PATIENT:05d}"
        ds.AccessionNumber, ds.SeriesNumber, ds.InstanceNumber = f"ACC{study:06d}", series + 1, number + 1
        path = folder / f"s{study:05d}" / f"{series}" / f"{number:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path)


def read_whole(folder: Path, options: MappingOptions) -> list[InstanceRecord]:
    """import-dicom's reading before ``header.py``: every element read and converted by pydicom, one file after
    the other (with the truncation check, without the bookkeeping of ``read_paths``)."""
    records = []
    for path in walk([folder]):
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            records.append(from_dicom_dataset(ds, options))
            check_complete(ds, fp, os.fstat(fp.fileno()).st_size)
    return records


def read_before(folder: Path, options: MappingOptions) -> ReadResult:
    """``read_paths`` in this process with the header read it had before ``header.read_file_header``."""

    def dcmread_header(fp: Any, prefix: int | None = None) -> Header:
        return Header(read_header(fp), fp)

    plain = reading.read_file_header
    reading.read_file_header = dcmread_header
    try:
        return read_paths([folder], options, workers=1)
    finally:
        reading.read_file_header = plain


def timed(label: str, run: Any, files: int, report: dict[str, Any]) -> Any:
    """Run ``run``: wall-clock files per second and CPU seconds per 1,000 files (this process's, plus the reader
    processes' when ``run`` returns a ``ReadResult`` that counts them; their fork server's start is not counted)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    readers = result.reader_cpu_seconds if isinstance(result, ReadResult) else 0.0
    report[label] = {
        "seconds": round(seconds, 2),
        "files_per_second": round(files / seconds, 1),
        "cpu_seconds_per_1000_files": round((cpu_seconds + readers) * 1000 / files, 3),
    }
    if readers:
        report[label]["of_which_this_process"] = round(cpu_seconds * 1000 / files, 3)
    return result


async def write(read: ReadResult, database: str) -> None:
    """The studies of ``read`` into ``database`` through the in-process FHIR API, as ``import-dicom --database``."""
    async with fhir_client(settings=Settings(database=database, sqlite_synchronous="normal")) as client:
        summary = await import_records(client, read)
    assert not summary.tally.failed, summary.tally.failed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_dicom", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="DICOM files to read (default 2000)")
    parser.add_argument("--workers", type=int, default=default_read_workers(), help="reader processes")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="small generated CT files (bench.dicom's, 8x8 pixels, 30 attributes) instead of pydicom's test files",
    )
    parser.add_argument("--write", action="store_true", help="also write the studies into a fresh SQLite database")
    args = parser.parse_args()
    options = MappingOptions()
    with tempfile.TemporaryDirectory(prefix="bench-import-dicom-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp) / "files"
        started = time.perf_counter()
        if args.synthetic:
            bench_dicom.write_files(folder, args.files)
        else:
            write_files(folder, args.files)
        report: dict[str, Any] = {
            "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
            "load_average": [round(load, 1) for load in os.getloadavg()],
            "files": args.files,
            "source": "synthetic" if args.synthetic else "pydicom test files",
            "workers": args.workers,
            "generate_seconds": round(time.perf_counter() - started, 1),
        }
        whole = timed("whole", lambda: read_whole(folder, options), args.files, report)
        before = timed("before", lambda: read_before(folder, options), args.files, report)
        fast = timed("fast", lambda: read_paths([folder], options, workers=1), args.files, report)
        parallel = timed(
            "fast_parallel", lambda: read_paths([folder], options, workers=args.workers), args.files, report
        )
        assert whole == before.records == fast.records == parallel.records, "every read must map alike"
        if args.write:
            database = f"sqlite:///{Path(tmp) / 'bench.db'}"
            timed("write_sqlite", lambda: asyncio.run(write(fast, database)), args.files, report)
    for label in ("before", "fast", "fast_parallel"):
        for base in ("whole", "before"):
            if label != base:
                report[label][f"ratio_to_{base}"] = round(
                    report[label]["files_per_second"] / report[base]["files_per_second"], 2
                )
                report[label][f"cpu_ratio_to_{base}"] = round(
                    report[base]["cpu_seconds_per_1000_files"] / report[label]["cpu_seconds_per_1000_files"], 2
                )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
