"""End to end benchmark of import-dicom (docs/dicom.md): ``python -m bench.import_dicom_e2e [--files 20000]
[--rounds 2] [--folder DIR] [--read-workers N]``.

Imports one folder of bench.dicom's small generated CT files (25 instances per series, 4 series per study, 10
studies per patient; ``--folder``: reuse a folder of them, made when missing) into a fresh SQLite database, the whole
command each time in a new process (Python's start, the imports, the walk, the reads, the mapping, the writes through
the in-process FHIR API), two ways, taking turns in the same run:

- ``sequential``: the way import-dicom ran before ``stream.py``: every file read (``importer.read_paths``, with the
  reader processes), then the studies grouped and written one after the other (``importer.import_records``);
- ``streaming``: ``importer.import_dicom`` as the command runs it: each study written while the next files are read.

Both must give the same summary. Each prints wall-clock files per second (from the process's start to its end) and
CPU seconds per 1,000 files (the process's user + system time, plus the reader processes' own, which they report): on
a machine shared with other work the wall clock measures the queue, the CPU seconds much less so. The load average is
printed before each round. Prints one JSON object with the ratios of ``streaming`` to ``sequential``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench import dicom as bench_dicom
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.importer import (
    ImportSummary,
    default_read_workers,
    import_dicom,
    import_records,
    read_paths,
    walk_resolved,
)
from fhir_imaging.dicom.limits import PARALLEL_FROM
from fhir_imaging.dicom.mapping import MappingOptions

WAYS = ("sequential", "streaming")


async def import_sequential(folder: Path, settings: Settings, read_workers: int) -> ImportSummary:
    """import-dicom before ``stream.py``: read everything, then group and write."""
    walked = list(walk_resolved([folder]))
    workers = read_workers if len(walked) >= PARALLEL_FROM else 1
    read = read_paths([folder], MappingOptions(), workers=workers, walked=walked)
    async with fhir_client(settings=settings) as client:
        return await import_records(client, read)


def run_one(way: str, folder: Path, database: str, read_workers: int) -> None:
    """One import in this (new) process; prints its summary and CPU seconds as JSON."""
    settings = Settings(database=database)
    if way == "sequential":
        summary = asyncio.run(import_sequential(folder, settings, read_workers))
    else:
        summary = asyncio.run(import_dicom([folder], settings=settings, read_workers=read_workers))
    cpu = time.process_time()  # since this process started: the imports included
    print(json.dumps({"summary": summary.lines(), "cpu": cpu, "readers_cpu": summary.read.reader_cpu_seconds}))


def timed(way: str, folder: Path, workdir: Path, files: int, read_workers: int) -> dict[str, Any]:
    database = workdir / f"{way}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.import_dicom_e2e", "--run-one", way, "--folder", str(folder)]
    command += ["--database", f"sqlite:///{database}", "--read-workers", str(read_workers)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    result = json.loads(out.strip().splitlines()[-1])
    cpu = result["cpu"] + result["readers_cpu"]
    return {
        "load_average": round(load, 1),
        "seconds": round(seconds, 2),
        "files_per_second": round(files / seconds, 1),
        "cpu_seconds_per_1000_files": round(cpu * 1000 / files, 3),
        "of_which_readers": round(result["readers_cpu"] * 1000 / files, 3),
        "summary": result["summary"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_dicom_e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000, help="DICOM files (default 20000)")
    parser.add_argument("--rounds", type=int, default=2, help="imports of each way, taking turns (default 2)")
    parser.add_argument("--folder", type=Path, help="the files' folder, kept (made when missing)")
    parser.add_argument("--read-workers", type=int, default=default_read_workers(), help="reader processes")
    parser.add_argument("--run-one", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(args.run_one, args.folder, args.database, args.read_workers)
        return
    with tempfile.TemporaryDirectory(prefix="bench-import-dicom-e2e-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = args.folder or Path(tmp) / "files"
        if not folder.exists():
            bench_dicom.write_files(folder, args.files)
        files = sum(1 for _ in walk_resolved([folder]))
        report: dict[str, Any] = {
            "machine": f"{platform.machine()} {os.cpu_count()} cores python {platform.python_version()}",
            "files": files,
            "read_workers": args.read_workers,
            "rounds": [],
        }
        for _ in range(args.rounds):
            report["rounds"].append({way: timed(way, folder, Path(tmp), files, args.read_workers) for way in WAYS})
    for result in report["rounds"]:
        sequential, streaming = result["sequential"], result["streaming"]
        assert sequential.pop("summary") == streaming.pop("summary"), "both ways must import alike"
        streaming["ratio"] = round(streaming["files_per_second"] / sequential["files_per_second"], 2)
        streaming["cpu_ratio"] = round(
            sequential["cpu_seconds_per_1000_files"] / streaming["cpu_seconds_per_1000_files"], 2
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
