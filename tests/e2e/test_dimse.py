"""DIMSE end to end against a real Orthanc: ``sync-dimse`` (C-FIND) makes the same resources as ``sync-dicomweb``
(QIDO-RS) of the same data.

Spec: DICOM PS3.4 C.4.1 (C-FIND), C.6.2 (Study Root); https://hl7.org/fhir/R4/imagingstudy.html; docs/dicom.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from fhir_imaging.cli import main
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.cfind import CFindReader
from fhir_imaging.dicom.dicomweb import QidoReader
from fhir_imaging.dicom.limits import DimseLimits
from fhir_imaging.dicom.pacs import PacsError
from fhir_imaging.dicom.sync import StudySource, SyncSummary, sync_once
from tests.e2e.orthanc import OrthancProcess, orthanc_holding, sample_files
from tests.e2e.server import free_port

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    with orthanc_holding(tmp_path_factory.mktemp("orthanc"), sample_files()) as pacs:
        yield pacs


def settings_for(tmp_path: Path, name: str) -> Settings:
    return Settings(database=f"sqlite:///{tmp_path / name}", sqlite_synchronous="normal")


def sync(settings: Settings, source: StudySource[Any]) -> SyncSummary:
    async def run() -> SyncSummary:
        async with fhir_client(settings=settings) as client:
            return await sync_once(client, source)

    return asyncio.run(run())


def search(settings: Settings, query: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with fhir_client(settings=settings) as client:
            response = await client.get(f"{query}{'&' if '?' in query else '?'}_count=1000")
            assert response.status_code == 200, response.text
            return [entry["resource"] for entry in response.json().get("entry", [])]

    return asyncio.run(run())


def finder(orthanc: OrthancProcess, **limits: Any) -> CFindReader:
    return CFindReader("127.0.0.1", orthanc.dicom_port, orthanc.aet, limits=DimseLimits(**limits))


def content(settings: Settings) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per StudyInstanceUID: the ImagingStudy and its Patient, without what differs between two databases and two
    PACS addresses (ids, meta, subject and endpoint references)."""
    patients = {f"Patient/{p['id']}": p for p in search(settings, "Patient")}
    found = {}
    for study in search(settings, "ImagingStudy"):
        patient = patients[study["subject"]["reference"]]
        drop = ("id", "meta", "subject", "endpoint")
        found[study["identifier"][0]["value"]] = (
            {key: value for key, value in study.items() if key not in drop},
            {key: value for key, value in patient.items() if key not in ("id", "meta")},
        )
    return found


def test_c_find_makes_the_same_resources_as_qido_rs(tmp_path: Path, orthanc: OrthancProcess) -> None:
    over_dimse, over_dicomweb = settings_for(tmp_path, "dimse.db"), settings_for(tmp_path, "dicomweb.db")
    dimse_summary = sync(over_dimse, finder(orthanc))
    dicomweb_summary = sync(over_dicomweb, QidoReader(orthanc.dicomweb))
    assert dimse_summary.tally.failed == [] and dimse_summary.skipped_instances == []
    assert (dimse_summary.studies, dimse_summary.tally.studies_created) == (8, 8)
    assert dimse_summary.tally.instances_added == dicomweb_summary.tally.instances_added
    from_dimse, from_dicomweb = content(over_dimse), content(over_dicomweb)
    assert from_dimse.keys() == from_dicomweb.keys() and len(from_dimse) == 8
    for uid, (study, patient) in from_dicomweb.items():
        assert from_dimse[uid][0] == study, uid
        # Orthanc's QIDO-RS leaves sequences (OtherPatientIDsSequence) out; its C-FIND answers them, as files have
        assert {**from_dimse[uid][1], "identifier": from_dimse[uid][1]["identifier"][:1]} == patient, uid
    ct_small = from_dimse[f"urn:oid:{CT_SMALL_STUDY}"][1]
    assert ct_small["identifier"] == [{"value": "1CT1"}, {"value": "ABCD1234"}, {"value": "1234ABCD"}]


def test_studies_point_at_a_dicom_dimse_endpoint(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = settings_for(tmp_path, "dimse.db")
    sync(settings, finder(orthanc))
    (endpoint,) = search(settings, "Endpoint")
    assert endpoint["connectionType"]["code"] == "dicom-dimse"
    assert endpoint["address"] == f"dicom://ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    assert endpoint["name"] == "ORTHANC" and endpoint["status"] == "active"
    studies = search(settings, "ImagingStudy")
    assert all(study["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}] for study in studies)


def test_sync_dimse_is_incremental_and_idempotent(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = settings_for(tmp_path, "dimse.db")
    sync(settings, finder(orthanc))
    versions = {r["id"]: r["meta"]["versionId"] for r in search(settings, "ImagingStudy")}
    again = sync(settings, finder(orthanc))
    assert (again.tally.studies_unchanged, again.tally.studies_created, again.tally.studies_updated) == (8, 0, 0)
    assert {r["id"]: r["meta"]["versionId"] for r in search(settings, "ImagingStudy")} == versions


def test_the_command_syncs_and_says_what_it_did(
    tmp_path: Path, orthanc: OrthancProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    argv = ["sync-dimse", "127.0.0.1", str(orthanc.dicom_port), "--called-aet", "ORTHANC", "--database", database]
    assert main([*argv, "--no-progress", "--since", "2004-01-01"]) == 0
    out = capsys.readouterr().out
    assert "studies: 2 (2 created, 0 updated, 0 unchanged, 0 failed)" in out


def test_an_unknown_calling_ae_title_is_a_clear_error(
    tmp_path: Path, orthanc: OrthancProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    argv = ["sync-dimse", "127.0.0.1", str(orthanc.dicom_port), "--called-aet", "ORTHANC", "--database", database]
    assert main([*argv, "--no-progress", "--calling-aet", "STRANGER"]) == 2
    err = capsys.readouterr().err
    assert "broke off the association during the study query" in err and "STRANGER" in err
    assert main([*argv[:4], "NOT-ORTHANC", *argv[5:], "--no-progress"]) == 2
    assert "refused the association for the study query" in capsys.readouterr().err


def test_the_result_caps_hold(orthanc: OrthancProcess) -> None:
    with pytest.raises(PacsError, match=r"answered the study query: more than 3 studies \(--max-studies\)"):
        finder(orthanc, max_studies=3).find_studies(None)
    reader = finder(orthanc, max_instances_per_study=10)
    big = [study for study in reader.find_studies(None) if (study.instances or 0) > 10]
    with pytest.raises(PacsError, match=r"more than 10 instances in one study \(--max-instances-per-study\)"):
        reader.read_study(big[0])


def test_a_pacs_that_is_down_is_a_clear_error() -> None:
    reader = CFindReader("127.0.0.1", free_port(), "ORTHANC", limits=DimseLimits(timeout=5))
    with pytest.raises(PacsError, match=r"ORTHANC@127\.0\.0\.1:\d+ \(the study query\)"):
        reader.find_studies(None)


def test_sync_dimse_command_through_a_running_server(tmp_path: Path, orthanc: OrthancProcess) -> None:
    import subprocess
    import sys

    import httpx

    from tests.e2e.server import running_server

    with running_server(f"sqlite:///{tmp_path / 'served.db'}") as server:
        command = [sys.executable, "-m", "fhir_imaging", "sync-dimse", "127.0.0.1", str(orthanc.dicom_port)]
        command += ["--called-aet", "ORTHANC", "--server", server.base, "--no-progress", "--reconcile"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "studies: 8 (8 created, 0 updated, 0 unchanged, 0 failed)" in done.stdout
        assert "reconciled: 0 studies no longer in the PACS" in done.stdout
        bundle = httpx.get(f"{server.base}/ImagingStudy", params={"_count": "100"}).json()
        assert len(bundle["entry"]) == 8
