"""Start a real Orthanc PACS (Debian ``orthanc`` + ``orthanc-dicomweb``) on free ports, for the DICOMweb and DIMSE
tests: a throwaway JSON config and storage in a temporary directory, stopped by its process id.

Orthanc listens on every interface; ``RemoteAccessAllowed: false`` makes its REST API refuse anything but loopback
clients. Its DICOM port (AE title ``ORTHANC``) answers C-FIND only to the AE titles listed in ``DicomModalities``
(``FHIRIMAGING`` by default, the calling AE title of ``sync-dimse``); ``add_modality`` names a C-STORE destination
(``listen``) at run time. ``orthanc_holding`` is what the test fixtures use: an Orthanc fed with files, or the test
skipped when Orthanc cannot run here; ``sample_files`` is the set several modules compare files and PACS on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom

from tests.e2e.server import free_port, stop_process, wait_until_answers

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
PATIENT_DIRS = ("77654033", "98892001", "98892003")  # the DICOMDIR set's three folders (two patients)


def files_under(*folders: Path) -> list[Path]:
    """Every file under ``folders``, in name order."""
    return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())


def sample_files() -> list[Path]:
    """CT_small.dcm, MR_small.dcm and the DICOMDIR set's three folders: what the DICOMweb and DIMSE tests load."""
    files = [PYDICOM_FILES / "CT_small.dcm", PYDICOM_FILES / "MR_small.dcm"]
    return files + files_under(*(DICOMDIR_TESTS / folder for folder in PATIENT_DIRS))


def orthanc_missing() -> str | None:
    """Why Orthanc with its DICOMweb plugin cannot run here, or ``None`` when it can."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (scripts/test installs the Debian packages orthanc and orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return f"the Orthanc DICOMweb plugin is missing ({DICOMWEB_PLUGIN}; Debian package orthanc-dicomweb)"
    return None


class OrthancProcess:
    """One Orthanc process; ``url`` is its REST API, ``dicomweb`` its DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)."""

    def __init__(self, workdir: Path, known_aets: tuple[str, ...] = ("FHIRIMAGING",)) -> None:
        self.port = free_port()
        self.dicom_port = free_port()
        self.aet = "ORTHANC"
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "fhir-imaging-tests",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "HttpPort": self.port,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomModalities": {aet.lower(): [aet, "127.0.0.1", 1] for aet in known_aets},
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SaveJobs": False,
            "HttpThreadsCount": 8,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}", "Ssl": False},
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        self._log = open(workdir / "orthanc.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["Orthanc", str(config_path)], stdout=self._log, stderr=self._log, cwd=workdir)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        try:
            wait_until_answers(self.process, f"{self.dicomweb}/studies", "Orthanc", timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; see {self._log.name}") from None

    def upload(self, path: Path | str) -> dict[str, str]:
        """Store one DICOM file through the REST API (``POST /instances``)."""
        response = httpx.post(f"{self.url}/instances", content=Path(path).read_bytes(), timeout=30.0)
        response.raise_for_status()
        answer: dict[str, str] = response.json()
        return answer

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Declare a DICOM peer Orthanc may send to (``POST /modalities/{name}/store``) and accept queries from."""
        body = {"AET": aet, "Host": host, "Port": port}
        httpx.put(f"{self.url}/modalities/{name}", json=body, timeout=10.0).raise_for_status()

    def send_to(self, name: str, resources: list[str], timeout: float = 120.0) -> dict[str, object]:
        """C-STORE the Orthanc resources (patient, study, series or instance ids) to modality ``name``."""
        response = httpx.post(f"{self.url}/modalities/{name}/store", json=resources, timeout=timeout)
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    def delete_study(self, study_uid: str) -> None:
        """Delete the study with this StudyInstanceUID (found with ``/tools/lookup``)."""
        found = httpx.post(f"{self.url}/tools/lookup", content=study_uid, timeout=10.0).json()
        for item in found:
            if item["Type"] == "Study":
                httpx.delete(f"{self.url}/studies/{item['ID']}", timeout=10.0).raise_for_status()

    def clear(self) -> None:
        """Delete every patient (and so every study) Orthanc holds."""
        for patient in httpx.get(f"{self.url}/patients", timeout=10.0).json():
            httpx.delete(f"{self.url}/patients/{patient}", timeout=10.0).raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


@contextmanager
def running_orthanc(workdir: Path, known_aets: tuple[str, ...] = ("FHIRIMAGING",)) -> Iterator[OrthancProcess]:
    orthanc = OrthancProcess(workdir, known_aets)
    try:
        yield orthanc
    finally:
        orthanc.stop()


@contextmanager
def orthanc_holding(
    workdir: Path, files: Iterable[Path | str] = (), known_aets: tuple[str, ...] = ("FHIRIMAGING",)
) -> Iterator[OrthancProcess]:
    """An Orthanc holding ``files`` (uploaded through its REST API), for a test fixture; the test is skipped when
    Orthanc cannot run here."""
    import pytest

    reason = orthanc_missing()
    if reason:
        pytest.skip(reason)
    with running_orthanc(workdir, known_aets) as pacs:
        for path in files:
            pacs.upload(path)
        yield pacs
