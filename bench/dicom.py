"""Benchmark of the DICOM bridge (docs/dicom.md): ``python -m bench.dicom [--files 10000] [--pacs-studies 50]``.

1. import-dicom: files per second on a generated folder of small DICOM files (pydicom; 25 instances per series, 4
   series per study, 10 studies per patient), into a fresh SQLite database through the in-process FHIR API; reading
   (headers) and writing are also timed apart.
2. sync-dicomweb: studies per second against a real Orthanc (Debian orthanc + orthanc-dicomweb, as the tests run it;
   20 instances per study), a first pass that creates everything and a second, incremental one with nothing to do.

Needs the server's search and transactions with conditional entries. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.dicomweb import QidoReader
from fhir_imaging.dicom.importer import import_records, read_paths
from fhir_imaging.dicom.mapping import MappingOptions
from fhir_imaging.dicom.sync import sync_once

INSTANCES_PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 25, 4, 10


def write_files(folder: Path, count: int, per_series: int = INSTANCES_PER_SERIES) -> list[Path]:
    """``count`` small CT files (8×8 pixels), grouped into series, studies and patients."""
    paths: list[Path] = []
    per_study = per_series * SERIES_PER_STUDY
    study_uid = series_uid = ""
    for index in range(count):
        study, within = divmod(index, per_study)
        series, number = divmod(within, per_series)
        if within == 0:
            study_uid = generate_uid()
        if number == 0:
            series_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        patient = study // STUDIES_PER_PATIENT
        ds.PatientID, ds.PatientName, ds.PatientSex = f"BENCH{patient:05d}", f"Bench^Patient{patient}", "O"
        ds.IssuerOfPatientID, ds.PatientBirthDate = "1.2.826.0.1.3680043.10.1", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.StudyTime, ds.TimezoneOffsetFromUTC = "20240615", "103000", "+0200"
        ds.AccessionNumber, ds.StudyDescription = f"ACC{study:06d}", "Bench CT"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.BodyPartExamined = "CT", series + 1, number + 1, "CHEST"
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = bytes(8 * 8 * 2)
        path = folder / f"s{study:05d}" / f"{series}" / f"{number:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


async def bench_import(folder: Path, database: str) -> dict[str, Any]:
    settings = Settings(database=database, sqlite_synchronous="normal")
    started = time.perf_counter()
    read = read_paths([folder], MappingOptions())
    read_seconds = time.perf_counter() - started
    async with fhir_client(settings=settings) as client:
        summary = await import_records(client, read)
    total = time.perf_counter() - started
    files = read.files
    return {
        "files": files,
        "studies": summary.tally.studies_created,
        "failed": len(summary.tally.failed),
        "read_files_per_second": round(files / read_seconds, 1),
        "files_per_second": round(files / total, 1),
        "seconds": round(total, 2),
    }


async def bench_sync(workdir: Path, studies: int) -> dict[str, Any]:
    from tests.e2e.orthanc import orthanc_missing, running_orthanc

    reason = orthanc_missing()
    if reason:
        return {"skipped": reason}
    per_series = 5  # 20 instances per study
    files = write_files(workdir / "pacs-files", studies * per_series * SERIES_PER_STUDY, per_series)
    with running_orthanc(workdir / "orthanc") as pacs:
        for path in files:
            pacs.upload(path)
        settings = Settings(database=f"sqlite:///{workdir / 'sync.db'}", sqlite_synchronous="normal")
        result: dict[str, Any] = {"instances": len(files)}
        async with fhir_client(settings=settings) as client:
            for name in ("first", "incremental"):
                started = time.perf_counter()
                summary = await sync_once(client, QidoReader(pacs.dicomweb))
                seconds = time.perf_counter() - started
                result[name] = {
                    "studies": summary.studies,
                    "created": summary.tally.studies_created,
                    "unchanged": summary.tally.studies_unchanged,
                    "studies_per_second": round(summary.studies / seconds, 1),
                    "instances_per_second": round(summary.tally.instances_added / seconds, 1),
                }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dicom", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="DICOM files to import (default 10000)")
    parser.add_argument("--pacs-studies", type=int, default=50, help="studies in Orthanc (default 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        write_files(workdir / "files", args.files)
        generated = round(time.perf_counter() - started, 1)
        report = {
            "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
            "generate_seconds": generated,
            "import_dicom": asyncio.run(bench_import(workdir / "files", f"sqlite:///{workdir / 'import.db'}")),
            "sync_dicomweb": asyncio.run(bench_sync(workdir, args.pacs_studies)),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
