"""import-dicom and sync-dicomweb end to end: files and a real Orthanc PACS into the FHIR server, through its REST
API (in-process on a database, and over HTTP to a running ``fhir-imaging serve``).

These need the server's search (``GET ImagingStudy?identifier=…``) and transaction Bundles with conditional entries
(``PUT Patient?identifier=…``, ``POST`` with ``ifNoneExist``, ``ifMatch``). Spec:
https://hl7.org/fhir/R4/http.html#transaction, https://hl7.org/fhir/R4/imagingstudy.html.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.dicomweb import PacsError, QidoReader
from fhir_imaging.dicom.importer import ImportSummary, import_dicom, import_records, read_paths
from fhir_imaging.dicom.mapping import MappingOptions
from fhir_imaging.dicom.sync import FoundStudy, SyncSummary, sync_once
from tests.e2e.orthanc import OrthancProcess, files_under, orthanc_holding
from tests.e2e.server import running_server

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def settings_for(tmp_path: Path, name: str = "dicom.db") -> Settings:
    return Settings(database=f"sqlite:///{tmp_path / name}", sqlite_synchronous="normal")


def search(settings: Settings, query: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with fhir_client(settings=settings) as client:
            resources, url = [], f"{query}{'&' if '?' in query else '?'}_count=1000"
            response = await client.get(url)
            assert response.status_code == 200, response.text
            resources += [entry["resource"] for entry in response.json().get("entry", [])]
            return resources

    return asyncio.run(run())


def do_import(settings: Settings, *paths: Path | str) -> ImportSummary:
    return asyncio.run(import_dicom(paths, settings=settings))


def versions(settings: Settings) -> dict[str, str]:
    found = search(settings, "ImagingStudy") + search(settings, "Patient") + search(settings, "Endpoint")
    return {f"{r['resourceType']}/{r['id']}": r["meta"]["versionId"] for r in found}


def copy_ct_small(path: Path, **changes: Any) -> Path:
    """CT_small.dcm as another instance (a new SOPInstanceUID), with ``changes``."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def test_the_dicomdir_set_becomes_seven_studies_of_three_patients(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    summary = do_import(settings, DICOMDIR_TESTS)
    tally = summary.tally
    assert (tally.studies_created, tally.patients_created, tally.instances_added) == (7, 3, 81), summary.lines()
    assert tally.failed == []
    studies = search(settings, "ImagingStudy")
    patients = {f"Patient/{p['id']}": p for p in search(settings, "Patient")}
    assert len(studies) == 7 and len(patients) == 3
    assert sorted(study["numberOfInstances"] for study in studies) == [2, 3, 4, 4, 7, 11, 50]
    for study in studies:
        assert study["subject"]["reference"] in patients
    ct = search(settings, "ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")
    assert ct == []  # CT_small is not in this set


def test_importing_the_same_files_twice_changes_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    do_import(settings, DICOMDIR_TESTS)
    before = versions(settings)
    again = do_import(settings, DICOMDIR_TESTS)
    assert again.tally.studies_unchanged == 7 and again.tally.studies_created == again.tally.studies_updated == 0
    assert again.tally.patients_created == again.tally.patients_updated == 0
    assert versions(settings) == before


def test_new_instances_of_a_known_study_are_added_and_the_counts_follow(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(str(get_testdata_file("CT_small.dcm")), first / "ct.dcm")
    do_import(settings, first)
    second = tmp_path / "second"
    second.mkdir()
    copy_ct_small(second / "same-series.dcm", InstanceNumber=2)
    copy_ct_small(second / "new-series.dcm", SeriesInstanceUID=generate_uid(), SeriesNumber=2, Modality="PT")
    summary = do_import(settings, second)
    assert (summary.tally.studies_updated, summary.tally.series_added, summary.tally.instances_added) == (1, 1, 2)
    (study,) = search(settings, f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{CT_SMALL_STUDY}")
    assert study["meta"]["versionId"] == "2"
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 3)
    assert [s["numberOfInstances"] for s in study["series"]] == [2, 1]
    assert [m["code"] for m in study["modality"]] == ["CT", "PT"]
    assert len(search(settings, "Patient")) == 1


def test_concurrent_imports_of_the_same_files_make_each_study_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    read = read_paths([DICOMDIR_TESTS], MappingOptions())

    async def run() -> list[ImportSummary]:
        async with fhir_client(settings=settings) as client:
            return list(await asyncio.gather(*(import_records(client, read) for _ in range(3))))

    summaries = asyncio.run(run())
    assert sum(s.tally.studies_created for s in summaries) == 7
    assert all(s.tally.failed == [] for s in summaries)
    assert len(search(settings, "ImagingStudy")) == 7 and len(search(settings, "Patient")) == 3


def test_import_dicom_command_through_a_running_server(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'served.db'}") as server:
        command = [sys.executable, "-m", "fhir_imaging", "import-dicom", str(DICOMDIR_TESTS / "DICOMDIR")]
        done = subprocess.run([*command, "--server", server.base], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "studies: 6 (6 created, 0 updated, 0 unchanged, 0 failed)" in done.stdout
        bundle = httpx.get(f"{server.base}/ImagingStudy", params={"_count": "100"}).json()
        assert len(bundle["entry"]) == 6


# --- sync-dicomweb against Orthanc -----------------------------------------------------------------------------


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    files = [*files_under(DICOMDIR_TESTS / "77654033", DICOMDIR_TESTS / "98892001"), get_testdata_file("CT_small.dcm")]
    with orthanc_holding(tmp_path / "orthanc", [str(path) for path in files]) as pacs:
        yield pacs


def sync(settings: Settings, reader: QidoReader) -> SyncSummary:
    async def run() -> SyncSummary:
        async with fhir_client(settings=settings) as client:
            return await sync_once(client, reader)

    return asyncio.run(run())


def test_sync_creates_studies_that_point_at_the_wado_rs_endpoint(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = settings_for(tmp_path)
    summary = sync(settings, QidoReader(orthanc.dicomweb))
    assert (summary.studies, summary.tally.studies_created, summary.tally.failed) == (4, 4, [])
    (endpoint,) = search(settings, "Endpoint")
    assert endpoint["status"] == "active" and endpoint["address"] == orthanc.dicomweb
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs" and endpoint["payloadType"]
    studies = search(settings, "ImagingStudy")
    assert all(study["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}] for study in studies)
    (ct,) = [s for s in studies if s["identifier"][0]["value"] == f"urn:oid:{CT_SMALL_STUDY}"]
    series, instance = ct["series"][0], ct["series"][0]["instance"][0]
    wado = f"{endpoint['address']}/studies/{CT_SMALL_STUDY}/series/{series['uid']}/instances/{instance['uid']}"
    fetched = httpx.get(wado, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    assert fetched.status_code == 200 and b"DICM" in fetched.content  # a viewer can fetch the images


def test_sync_is_incremental_and_idempotent(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = settings_for(tmp_path)
    sync(settings, QidoReader(orthanc.dicomweb))
    before = versions(settings)
    again = sync(settings, QidoReader(orthanc.dicomweb))
    assert again.tally.studies_unchanged == 4 and again.tally.studies_created == again.tally.studies_updated == 0
    assert versions(settings) == before
    orthanc.upload(copy_ct_small(tmp_path / "more.dcm", InstanceNumber=2))
    third = sync(settings, QidoReader(orthanc.dicomweb))
    assert (third.tally.studies_updated, third.tally.studies_unchanged, third.tally.instances_added) == (1, 3, 1)
    (ct,) = search(settings, f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{CT_SMALL_STUDY}")
    assert ct["numberOfInstances"] == 2


class FailingReader(QidoReader):
    """The PACS answers the study query, then fails while the second study's series are read."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.read = 0

    def read_study(self, study: FoundStudy[dict[str, Any]]) -> list[Any]:
        self.read += 1
        if self.read == 2:
            raise PacsError("the PACS went away")
        return super().read_study(study)


def test_a_pacs_failing_halfway_leaves_no_partial_study(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(PacsError):
        sync(settings, FailingReader(orthanc.dicomweb))
    studies = search(settings, "ImagingStudy")
    assert len(studies) == 1  # the first study, complete; nothing of the second
    assert studies[0]["numberOfInstances"] == sum(len(s["instance"]) for s in studies[0]["series"])
    summary = sync(settings, QidoReader(orthanc.dicomweb))  # the next run completes the rest
    assert (summary.tally.studies_created, summary.tally.studies_unchanged) == (3, 1)
