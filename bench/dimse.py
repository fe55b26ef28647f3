"""Benchmark of the DIMSE bridge (docs/dicom.md): ``python -m bench.dimse [--instances 2000] [--pacs-studies 50]``.

Each figure comes with a baseline measured in the same run, on the same data, and their ratio:

1. listen ← pynetdicom sender: instances per second over one association, from the first C-STORE to the last
   answer, and until every study is written to a fresh SQLite database (in-process FHIR API). Baseline: a bare
   pynetdicom storage SCP that answers success and keeps nothing (the floor of pynetdicom on this machine).
2. listen ← Orthanc (``POST /modalities/{name}/store`` of every study): instances per second. Baseline: Orthanc
   sending the same studies to the bare SCP.
3. sync-dimse: studies per second of a first pass (creates everything) and of an incremental one (nothing to do)
   against Orthanc. Baseline: sync-dicomweb over the same Orthanc, same passes.

Generated data: small CT instances (8×8 pixels; 25 per series, 4 series per study, as bench/dicom.py). Needs
Debian's orthanc and orthanc-dicomweb for 2 and 3. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from bench.dicom import SERIES_PER_STUDY, write_files
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.cfind import CFindReader
from fhir_imaging.dicom.dicomweb import QidoReader
from fhir_imaging.dicom.listen import ListenSummary, Stop, serve
from fhir_imaging.dicom.listen_options import ListenOptions
from fhir_imaging.dicom.listener import Listener
from fhir_imaging.dicom.sync import StudySource, sync_once


def bare_scp() -> tuple[ThreadedAssociationServer, int, list[int]]:
    """A pynetdicom storage SCP that answers success and keeps nothing; (server, port, received counter)."""
    ae = AE("BARE")
    ae.supported_contexts = StoragePresentationContexts
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    received = [0]

    def on_store(event: evt.Event) -> int:
        received[0] += 1
        return 0

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    return server, server.server_address[1], received


class RunningListener:
    """``serve`` in a thread of its own, as the command runs it, on a fresh database."""

    def __init__(self, database: str, **options: Any) -> None:
        self.settings = Settings(database=database, sqlite_synchronous="normal")
        self.options = replace(ListenOptions(port=0, quiet_period=600), **options)
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop = Stop()
        self.listener: Listener | None = None
        self.summary: ListenSummary | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _run(self) -> None:
        async def main() -> None:
            self.stop = Stop()

            def ready(listener: Listener) -> None:
                self.listener = listener
                self.ready.set()

            self.summary = await serve(self.options, settings=self.settings, stop=self.stop, ready=ready)

        self.loop.run_until_complete(main())

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    def written(self) -> int:
        async def count() -> int:
            async with fhir_client(settings=self.settings) as client:
                response = await client.get("ImagingStudy?_summary=count")
                return int(response.json().get("total", 0))

        return asyncio.run(count())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(120)
        self.loop.close()


def send(port: int, datasets: list[pydicom.Dataset], called: str) -> float:
    """Seconds to C-STORE every dataset over one association (from association to the last answer)."""
    ae = AE("BENCH")
    ae.requested_contexts = StoragePresentationContexts[:127]
    ae.maximum_pdu_size = 256 * 1024
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300  # a loaded machine must not end the run
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if sock is not None:  # pynetdicom leaves Nagle on: the sender would stall ~40 ms a message on delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for ds in datasets:
        status = assoc.send_c_store(ds)
        assert int(status.Status) == 0
    assoc.release()
    return time.perf_counter() - started


def bench_listen(workdir: Path, files: list[Path]) -> dict[str, Any]:
    datasets = [pydicom.dcmread(path) for path in files]
    studies = len({ds.StudyInstanceUID for ds in datasets})
    server, port, received = bare_scp()
    baseline = send(port, datasets, "BARE")
    server.shutdown()
    assert received[0] == len(datasets)
    running = RunningListener(f"sqlite:///{workdir / 'listen.db'}")
    started = time.perf_counter()
    received_seconds = send(running.port, datasets, "FHIRIMAGING")
    while running.written() < studies:
        time.sleep(0.05)
    written_seconds = time.perf_counter() - started
    running.close()
    count = len(datasets)
    return {
        "instances": count,
        "studies": studies,
        "baseline_bare_scp_instances_per_second": round(count / baseline, 1),
        "listen_received_instances_per_second": round(count / received_seconds, 1),
        "listen_written_instances_per_second": round(count / written_seconds, 1),
        "ratio_received_vs_bare": round(baseline / received_seconds, 3),
        "ratio_written_vs_bare": round(baseline / written_seconds, 3),
    }


def orthanc_send(pacs: Any, name: str, studies: list[str]) -> float:
    started = time.perf_counter()
    pacs.send_to(name, studies, timeout=600)
    return time.perf_counter() - started


def sync_pass(settings: Settings, source: StudySource[Any]) -> tuple[int, float]:
    async def run() -> int:
        async with fhir_client(settings=settings) as client:
            return (await sync_once(client, source)).studies

    started = time.perf_counter()
    studies = asyncio.run(run())
    return studies, time.perf_counter() - started


def bench_with_orthanc(workdir: Path, studies: int) -> dict[str, Any]:
    from tests.e2e.orthanc import orthanc_missing, running_orthanc

    reason = orthanc_missing()
    if reason:
        return {"skipped": reason}
    per_series = 5  # 20 instances per study
    files = write_files(workdir / "pacs-files", studies * per_series * SERIES_PER_STUDY, per_series)
    result: dict[str, Any] = {"instances": len(files), "studies": studies}
    with running_orthanc(workdir / "orthanc", known_aets=("FHIRIMAGING", "BARE")) as pacs:
        ids = sorted({pacs.upload(path)["ParentStudy"] for path in files})
        server, port, received = bare_scp()
        pacs.add_modality("bare", "BARE", port)
        baseline = orthanc_send(pacs, "bare", ids)
        server.shutdown()
        assert received[0] == len(files)
        running = RunningListener(f"sqlite:///{workdir / 'from-orthanc.db'}")
        pacs.add_modality("fhirimaging", "FHIRIMAGING", running.port)
        received_seconds = orthanc_send(pacs, "fhirimaging", ids)
        running.close()
        result["listen_from_orthanc"] = {
            "baseline_bare_scp_instances_per_second": round(len(files) / baseline, 1),
            "listen_instances_per_second": round(len(files) / received_seconds, 1),
            "ratio_vs_bare": round(baseline / received_seconds, 3),
        }
        sources: dict[str, Any] = {
            "sync_dicomweb": lambda: QidoReader(pacs.dicomweb),
            "sync_dimse": lambda: CFindReader("127.0.0.1", pacs.dicom_port, pacs.aet),
        }
        passes: dict[str, dict[str, float]] = {}
        for name, make in sources.items():
            settings = Settings(database=f"sqlite:///{workdir / f'{name}.db'}", sqlite_synchronous="normal")
            for kind in ("first", "incremental"):
                found, seconds = sync_pass(settings, make())
                passes.setdefault(name, {})[f"{kind}_studies_per_second"] = round(found / seconds, 1)
        result["sync"] = passes
        result["sync"]["ratio_dimse_vs_dicomweb"] = {
            kind: round(
                passes["sync_dimse"][f"{kind}_studies_per_second"]
                / passes["sync_dicomweb"][f"{kind}_studies_per_second"],
                3,
            )
            for kind in ("first", "incremental")
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dimse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="instances a pynetdicom sender sends (2000)")
    parser.add_argument("--pacs-studies", type=int, default=50, help="studies of 20 instances in Orthanc (50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as tmp:
        workdir = Path(tmp)
        files = write_files(workdir / "files", args.instances)
        report = {
            "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
            "listen_from_pynetdicom": bench_listen(workdir, files),
            "orthanc": bench_with_orthanc(workdir, args.pacs_studies),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
