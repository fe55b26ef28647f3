"""Bulk export throughput against paging through searches, in one run: ``python -m bench.export --database PATH``.

Copies a SQLite database (e.g. the benchmark's cached ``ours-SCALE-…db`` template: studies with their patients),
starts a server on the copy, then (alternating the order each round) exports every ImagingStudy and Patient with
``fhir-imaging export`` and reads the same resources by paging ``GET [type]?_count=1000`` through the API (the
baseline: what a client without $export does). Prints resources/s and MB/s of each, their ratio, and the server's
RSS sampled during the export (first, peak, last). Not a test: see bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.server import ServerProcess

TYPES = ("ImagingStudy", "Patient")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _sample(pid: int, samples: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        samples.append(_rss_kib(pid))
        time.sleep(0.1)


def _export(base: str, out: Path) -> tuple[int, int, float]:
    """(resources, bytes, seconds) of one ``fhir-imaging export``."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fhir_imaging", "export", str(out), "--server", base, "--no-progress",
         "--type", ",".join(TYPES)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    files = list(out.glob("*.ndjson"))
    lines = sum(path.read_bytes().count(b"\n") for path in files)
    size = sum(path.stat().st_size for path in files)
    assert "exported" in done.stdout, done.stdout
    return lines, size, seconds


def _paged(base: str) -> tuple[int, int, float]:
    """(resources, bytes, seconds) of paging every type's search at _count=1000."""
    resources = size = 0
    started = time.perf_counter()
    with httpx.Client(timeout=300) as client:
        for resource_type in TYPES:
            url: str | None = f"{base}/{resource_type}?_count=1000"
            while url:
                answer = client.get(url)
                answer.raise_for_status()
                size += len(answer.content)
                bundle = answer.json()
                resources += len(bundle.get("entry", []))
                url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return resources, size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--database", type=Path, required=True, help="a SQLite database to copy")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    copy = work / "export.db"
    shutil.copy(args.database, copy)
    server = ServerProcess(f"sqlite:///{copy}", extra=("--export-dir", str(work / "files"), "--log-level", "warning"))
    try:
        for round_number in range(args.rounds):
            order = ("export", "paged") if round_number % 2 == 0 else ("paged", "export")
            figures: dict[str, tuple[int, int, float]] = {}
            samples: list[int] = []
            for kind in order:
                if kind == "export":
                    stop = threading.Event()
                    sampler = threading.Thread(target=_sample, args=(server.process.pid, samples, stop))
                    sampler.start()
                    figures[kind] = _export(server.base, work / "out")
                    stop.set()
                    sampler.join()
                else:
                    figures[kind] = _paged(server.base)
            for kind, (count, size, seconds) in figures.items():
                print(f"round {round_number + 1} {kind:7s} {count} resources, {size / 1e6:.1f} MB in {seconds:.2f} s: "
                      f"{count / seconds:,.0f} resources/s, {size / 1e6 / seconds:.1f} MB/s")  # fmt: skip
            ratio = (figures["export"][0] / figures["export"][2]) / (figures["paged"][0] / figures["paged"][2])
            print(f"round {round_number + 1} export / paged search: {ratio:.2f}x resources/s; "
                  f"server RSS during the export (MiB): first {samples[0] / 1024:.0f}, "
                  f"peak {max(samples) / 1024:.0f}, last {samples[-1] / 1024:.0f}")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
