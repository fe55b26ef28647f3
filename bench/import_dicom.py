"""Benchmark of reading files for import-dicom (docs/dicom.md): ``python -m bench.import_dicom [--files 2000]
[--workers N]``.

The files are copies of pydicom's own test files (CT, MR in explicit and implicit VR, NM JPEG 2000, secondary
capture, a segmentation with its sequences), each with new study, series and instance UIDs and patients, 25
instances per series and 4 series per study. Three ways of reading the same folder, in the same run, headers only:

- ``whole``: the way import-dicom read before: pydicom reads every element of the header and the mapping takes
  pydicom's converted values (``dcmread(stop_before_pixels=True)``), one file after the other;
- ``fast``: ``importer.read_paths`` in this process: only the mapped attributes (``header.py``), their plain
  values decoded directly;
- ``fast_parallel``: the same with ``--workers`` reader processes (default: import-dicom's default).

All three must give the same records. Prints one JSON object: files per second and the ratios to ``whole``.
"""

from __future__ import annotations

import argparse
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
from fhir_imaging.dicom.importer import check_complete, default_read_workers, read_paths, walk
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


def timed(label: str, run: Any, files: int, report: dict[str, Any], cpu: bool = True) -> list[InstanceRecord]:
    """Run ``run``; wall-clock files per second and, for a run in this process, files per CPU second (which a
    machine shared with other work changes less; the reader processes are the fork server's children, not ours,
    so their CPU time is not counted here)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    records: list[InstanceRecord] = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    report[label] = {"seconds": round(seconds, 2), "files_per_second": round(files / seconds, 1)}
    if cpu:
        report[label]["files_per_cpu_second"] = round(files / cpu_seconds, 1)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_dicom", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="DICOM files to read (default 2000)")
    parser.add_argument("--workers", type=int, default=default_read_workers(), help="reader processes")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="small generated CT files (bench.dicom's, 8x8 pixels, 30 attributes) instead of pydicom's test files",
    )
    args = parser.parse_args()
    options = MappingOptions()
    with tempfile.TemporaryDirectory(prefix="bench-import-dicom-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        started = time.perf_counter()
        if args.synthetic:
            bench_dicom.write_files(folder, args.files)
        else:
            write_files(folder, args.files)
        report: dict[str, Any] = {
            "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
            "files": args.files,
            "source": "synthetic" if args.synthetic else "pydicom test files",
            "workers": args.workers,
            "generate_seconds": round(time.perf_counter() - started, 1),
        }
        whole = timed("whole", lambda: read_whole(folder, options), args.files, report)
        fast = timed("fast", lambda: read_paths([folder], options, workers=1).records, args.files, report)
        importer = timed(
            "fast_parallel",
            lambda: read_paths([folder], options, workers=args.workers).records,
            args.files,
            report,
            cpu=False,
        )
    assert whole == fast == importer, "the fast reads must map to exactly what the whole read maps to"
    base = report["whole"]["files_per_second"]
    base_cpu = report["whole"]["files_per_cpu_second"]
    for label in ("fast", "fast_parallel"):
        report[label]["ratio_to_whole"] = round(report[label]["files_per_second"] / base, 2)
    report["fast"]["cpu_ratio_to_whole"] = round(report["fast"]["files_per_cpu_second"] / base_cpu, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
