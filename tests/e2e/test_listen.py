"""``fhir-imaging listen`` end to end: a pynetdicom sender and a real Orthanc send instances with C-STORE, and the
studies appear in the FHIR server; what a listener must refuse is refused, and it keeps listening.

Spec: DICOM PS3.4 Annex B (Storage), Annex A (Verification), PS3.8 §7.1 (association rejection), §9.3 (PDUs);
docs/dicom.md, *listen*.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.misc import is_dicom
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom import listen
from fhir_imaging.dicom.listen import ListenSummary, Stop, serve
from fhir_imaging.dicom.listen_options import ListenOptions
from fhir_imaging.dicom.listener import Listener
from tests.e2e.orthanc import OrthancProcess, orthanc_holding
from tests.e2e.server import ServerProcess, free_port

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
VERIFICATION = "1.2.840.10008.1.1"


def dicomdir_files() -> list[Path]:
    """The 81 DICOM files of pydicom's DICOMDIR test set, without the DICOMDIRs: 7 studies of 3 patients."""
    files = (p for p in DICOMDIR_TESTS.rglob("*") if p.parent != DICOMDIR_TESTS and not p.name.startswith("DICOMDIR"))
    return sorted(p for p in files if p.is_file() and is_dicom(p))


@dataclass
class Running:
    listener: Listener
    settings: Settings
    live: ListenSummary  # filled in while it runs
    summary: ListenSummary | None = None

    @property
    def port(self) -> int:
        return self.listener.port


@contextmanager
def running_listener(tmp_path: Path, server: RemoteServer | None = None, **options: Any) -> Iterator[Running]:
    """``serve`` in a thread of its own (its own event loop) on a free port, writing to a database of its own (or
    to ``server``); stopped and drained at the end."""
    settings = Settings(database=f"sqlite:///{tmp_path / 'listen.db'}", sqlite_synchronous="normal")
    listen_options = replace(ListenOptions(port=0), **{"quiet_period": 30.0, **options})
    started: list[Listener] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: list[Stop] = []
    result: list[ListenSummary] = []
    live = ListenSummary()

    def run() -> None:
        async def main() -> None:
            stop.append(Stop())

            def on_ready(listener: Listener) -> None:
                started.append(listener)
                ready.set()

            summary = await serve(
                listen_options, server=server, settings=settings, stop=stop[0], ready=on_ready, summary=live
            )
            result.append(summary)

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the listener did not start"
    running = Running(started[0], settings, live)
    try:
        yield running
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(60)
        loop.close()
        running.summary = result[0] if result else None


def sender(aet: str = "SENDER") -> AE:
    ae = AE(aet)
    ae.requested_contexts = StoragePresentationContexts[:127]
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def read(path: Path) -> pydicom.Dataset:
    """A file as a dataset to send: C-STORE needs SOPClassUID and SOPInstanceUID in it (some test files have them
    in their file meta only)."""
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.get("SOPClassUID") or ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID
    return ds


def send(port: int, paths: list[Path], aet: str = "SENDER", called: str = "FHIRIMAGING") -> list[int]:
    """C-STORE every file over one association; the statuses."""
    assoc = sender(aet).associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(read(path)).Status) for path in paths]
    assoc.release()
    return statuses


def search(settings: Settings, query: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with fhir_client(settings=settings) as client:
            response = await client.get(f"{query}{'&' if '?' in query else '?'}_count=1000")
            assert response.status_code == 200, response.text
            return [entry["resource"] for entry in response.json().get("entry", [])]

    return asyncio.run(run())


def wait_for_studies(settings: Settings, count: int, within: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        studies = search(settings, "ImagingStudy")
        if len(studies) >= count or time.monotonic() > deadline:
            return studies
        time.sleep(0.2)


def echo(port: int, aet: str = "SENDER") -> int:
    assoc = sender(aet).associate("127.0.0.1", port, ae_title="FHIRIMAGING")
    assert assoc.is_established
    status = int(assoc.send_c_echo().Status)
    assoc.release()
    return status


def test_the_dicomdir_set_sent_over_c_store_becomes_its_studies(tmp_path: Path) -> None:
    with running_listener(tmp_path) as running:
        statuses = send(running.port, dicomdir_files())
        assert statuses == [0] * 81
        studies = wait_for_studies(running.settings, 7)
    assert sorted(study["numberOfInstances"] for study in studies) == [2, 3, 4, 4, 7, 11, 50]
    assert sorted(study["numberOfSeries"] for study in studies) == sorted(
        len({s["uid"] for s in study["series"]}) for study in studies
    )
    assert len(search(running.settings, "Patient")) == 3
    assert all(study["meta"]["versionId"] == "1" for study in studies)  # one write per study, not per instance
    assert running.summary is not None and running.summary.received == 81


def test_c_echo_answers(tmp_path: Path) -> None:
    with running_listener(tmp_path) as running:
        assert echo(running.port) == 0


def test_an_unknown_calling_ae_title_is_rejected(tmp_path: Path) -> None:
    with running_listener(tmp_path, allow_aets=("MODALITY1",)) as running:
        assoc = sender("STRANGER").associate("127.0.0.1", running.port, ae_title="FHIRIMAGING")
        assert assoc.is_rejected
        assert echo(running.port, "MODALITY1") == 0


def test_an_aborted_association_leaves_the_instances_it_delivered_as_a_consistent_study(tmp_path: Path) -> None:
    files = dicomdir_files()[:5]
    with running_listener(tmp_path) as running:
        assoc = sender().associate("127.0.0.1", running.port, ae_title="FHIRIMAGING")
        assert [int(assoc.send_c_store(read(path)).Status) for path in files] == [0] * 5
        assoc.abort()
        studies = wait_for_studies(running.settings, len({read(path).StudyInstanceUID for path in files}), within=10)
        assert echo(running.port) == 0  # still listening
    received = sum(study["numberOfInstances"] for study in studies)
    assert received == 5
    for study in studies:
        assert study["numberOfInstances"] == sum(len(series["instance"]) for series in study["series"])


def test_bytes_that_are_not_dicom_are_refused_and_the_listener_lives_on(tmp_path: Path) -> None:
    with running_listener(tmp_path) as running:
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x01\x00\xff\xff\xff\xff" + b"A" * 100, b"\x00" * 7):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                sock.sendall(garbage)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(10)
                with pytest.raises(OSError):
                    while sock.recv(4096):  # the listener answers an A-ABORT at most, then closes
                        pass
                    raise OSError("closed")
        assert echo(running.port) == 0


def test_a_dataset_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    big = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))  # 39 kB
    with running_listener(tmp_path, max_dataset_bytes=16 * 1024) as running:
        assoc = sender().associate("127.0.0.1", running.port, ae_title="FHIRIMAGING")
        status = assoc.send_c_store(big)
        assert "Status" not in status  # no answer: the association was aborted
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert assoc.is_aborted
        assert echo(running.port) == 0
        assert send(running.port, dicomdir_files()[:1]) == [0]  # small enough
        deadline = time.monotonic() + 10
        while any(running.listener.incoming.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running.listener.incoming.iterdir())  # the partial file is removed
    assert running.listener.refused == 1


def test_store_dir_keeps_the_files_by_uid(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = dicomdir_files()[:3]
    with running_listener(tmp_path, store_dir=store) as running:
        send(running.port, files)
    kept = sorted(store.rglob("*.dcm"))
    assert len(kept) == 3
    for path in kept:
        ds = pydicom.dcmread(path)
        assert path.relative_to(store).parts == (ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")


def test_an_instance_without_uids_is_refused_with_c000(tmp_path: Path) -> None:
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = generate_uid()
    with running_listener(tmp_path) as running:
        assoc = sender().associate("127.0.0.1", running.port, ae_title="FHIRIMAGING")
        assert int(assoc.send_c_store(ds).Status) == 0xC000
        assoc.release()


def test_the_quiet_period_writes_a_study_whose_association_stays_open(tmp_path: Path) -> None:
    with running_listener(tmp_path, quiet_period=1.0) as running:
        assoc = sender().associate("127.0.0.1", running.port, ae_title="FHIRIMAGING")
        assert int(assoc.send_c_store(read(dicomdir_files()[0])).Status) == 0
        studies = wait_for_studies(running.settings, 1, within=10)
        assoc.release()
    assert len(studies) == 1


# --- Orthanc sends --------------------------------------------------------------------------------------------


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    with orthanc_holding(tmp_path / "orthanc") as pacs:
        yield pacs


def test_orthanc_sends_its_studies_with_c_store(tmp_path: Path, orthanc: OrthancProcess) -> None:
    ids = [orthanc.upload(path)["ParentStudy"] for path in dicomdir_files()]
    with running_listener(tmp_path, allow_aets=("ORTHANC",)) as running:
        orthanc.add_modality("fhirimaging", "FHIRIMAGING", running.port)
        orthanc.send_to("fhirimaging", sorted(set(ids)))
        studies = wait_for_studies(running.settings, 7)
    assert sorted(study["numberOfInstances"] for study in studies) == [2, 3, 4, 4, 7, 11, 50]


def test_the_listen_command_writes_to_a_running_server_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    import httpx

    from tests.e2e.server import free_port, running_server

    with running_server(f"sqlite:///{tmp_path / 'served.db'}") as server:
        port = free_port()
        command = [sys.executable, "-m", "fhir_imaging", "listen", "--port", str(port), "--server", server.base]
        listener = subprocess.Popen([*command, "--allow-aet", "SENDER"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # a plain connect: pynetdicom leaks the socket of a refused one
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            assert echo(port) == 0
            assert send(port, dicomdir_files()[:11]) == [0] * 11
        finally:
            listener.send_signal(signal.SIGTERM)
            out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
        assert "instances: 11 received, 0 refused" in out.decode()
        bundle = httpx.get(f"{server.base}/ImagingStudy", params={"_count": "100"}).json()
        assert sum(entry["resource"]["numberOfInstances"] for entry in bundle["entry"]) == 11
        assert b"listening as FHIRIMAGING" in err


def test_a_study_sent_while_the_fhir_server_is_down_arrives_once_it_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen, "RETRY_MAX_DELAY", 2.0)  # tried again every 2 s at most, not 30
    port = free_port()
    files = [path for path in dicomdir_files() if "77654033" in str(path)][:7]
    study_uids = {str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID) for path in files}
    remote = RemoteServer(f"http://127.0.0.1:{port}/baseR4")
    with running_listener(tmp_path, server=remote, retry_for=300) as running:
        assert send(running.port, files) == [0] * len(files)
        deadline = time.monotonic() + 30
        while running.live.retries == 0:  # at least one write failed and was held back
            assert time.monotonic() < deadline, "no write was tried"
            time.sleep(0.2)
        server = ServerProcess(f"sqlite:///{tmp_path / 'late.db'}", port=port)
        try:
            deadline = time.monotonic() + 60
            while True:
                studies = httpx.get(f"{server.base}/ImagingStudy", params={"_count": "100"}).json().get("entry", [])
                if len(studies) == len(study_uids) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            server.stop()
    assert len(studies) == len(study_uids)
    assert sum(entry["resource"]["numberOfInstances"] for entry in studies) == len(files)
    assert running.summary is not None and running.summary.tally.failed == []


def test_a_study_is_dropped_after_retry_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listen, "RETRY_FIRST_DELAY", 0.2)
    remote = RemoteServer(f"http://127.0.0.1:{free_port()}/baseR4")  # never started
    store = tmp_path / "kept"
    with running_listener(tmp_path, server=remote, retry_for=1.0, store_dir=store) as running:
        path = dicomdir_files()[0]
        assert send(running.port, [path]) == [0]
        deadline = time.monotonic() + 30
        while not running.live.tally.failed:
            assert time.monotonic() < deadline, "the study was not dropped"
            time.sleep(0.2)
    summary = running.summary
    assert summary is not None and summary.retries >= 1 and summary.studies_written == 1
    ((_uid, reason),) = summary.tally.failed
    assert "cannot reach the FHIR server" in reason and "--retry-for" in reason
    assert len(list(store.rglob("*.dcm"))) == 1  # the file is there for import-dicom
