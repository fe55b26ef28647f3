"""``--reconcile`` against a real Orthanc, over DICOMweb and over DIMSE: a study deleted from the PACS is marked
``unknown`` and loses the Endpoint reference, never deleted; uploaded again, the next sync makes it ``available``.

Spec: https://hl7.org/fhir/R4/valueset-imagingstudy-status.html; docs/dicom.md, *reconcile*.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from fhir_imaging.cli import main
from fhir_imaging.client import fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.cfind import CFindReader
from fhir_imaging.dicom.dicomweb import QidoReader
from fhir_imaging.dicom.sync import StudySource, SyncSummary, sync_once
from tests.e2e.orthanc import OrthancProcess, files_under, orthanc_holding

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"

SOURCES: dict[str, Callable[[OrthancProcess], StudySource[Any]]] = {
    "dicomweb": lambda pacs: QidoReader(pacs.dicomweb),
    "dimse": lambda pacs: CFindReader("127.0.0.1", pacs.dicom_port, pacs.aet),
}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    with orthanc_holding(tmp_path / "orthanc", [*files_under(DICOMDIR_TESTS / "77654033"), CT_SMALL]) as pacs:
        yield pacs


def sync(settings: Settings, source: StudySource[Any], reconcile: bool = True) -> SyncSummary:
    async def run() -> SyncSummary:
        async with fhir_client(settings=settings) as client:
            return await sync_once(client, source, reconcile=reconcile)

    return asyncio.run(run())


def studies(settings: Settings) -> dict[str, dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with fhir_client(settings=settings) as client:
            response = await client.get("ImagingStudy?_count=1000")
            return [entry["resource"] for entry in response.json().get("entry", [])]

    return {study["identifier"][0]["value"].removeprefix("urn:oid:"): study for study in asyncio.run(run())}


@pytest.mark.parametrize("kind", SOURCES)
def test_a_study_gone_from_the_pacs_is_marked_unknown_and_comes_back_available(
    tmp_path: Path, orthanc: OrthancProcess, kind: str
) -> None:
    settings = Settings(database=f"sqlite:///{tmp_path / 'reconcile.db'}", sqlite_synchronous="normal")
    first = sync(settings, SOURCES[kind](orthanc))
    assert first.reconciled is not None and first.reconciled.marked == []
    before = studies(settings)
    assert len(before) == 3 and all(study["status"] == "available" for study in before.values())

    orthanc.delete_study(CT_SMALL_STUDY)
    gone = sync(settings, SOURCES[kind](orthanc))
    assert gone.reconciled is not None and gone.reconciled.marked == [CT_SMALL_STUDY]
    after = studies(settings)
    assert len(after) == 3  # never deleted
    ct = after[CT_SMALL_STUDY]
    assert ct["status"] == "unknown" and "endpoint" not in ct and ct["meta"]["versionId"] == "2"
    assert ct["numberOfInstances"] == 1  # the rest of what was known stays
    for uid, study in after.items():
        if uid != CT_SMALL_STUDY:
            assert study["meta"]["versionId"] == before[uid]["meta"]["versionId"]  # untouched

    again = sync(settings, SOURCES[kind](orthanc))
    assert again.reconciled is not None and again.reconciled.marked == []  # nothing points at the Endpoint
    assert studies(settings)[CT_SMALL_STUDY]["meta"]["versionId"] == "2"

    orthanc.upload(CT_SMALL)
    back = sync(settings, SOURCES[kind](orthanc))
    assert back.returned == 1
    ct = studies(settings)[CT_SMALL_STUDY]
    assert ct["status"] == "available" and ct["endpoint"] == before[CT_SMALL_STUDY]["endpoint"]


def test_a_status_set_by_hand_is_kept(tmp_path: Path, orthanc: OrthancProcess) -> None:
    settings = Settings(database=f"sqlite:///{tmp_path / 'reconcile.db'}", sqlite_synchronous="normal")
    sync(settings, QidoReader(orthanc.dicomweb))
    ct = studies(settings)[CT_SMALL_STUDY]

    async def withdraw() -> None:
        async with fhir_client(settings=settings) as client:
            body = {k: v for k, v in ct.items() if k != "meta"} | {"status": "entered-in-error"}
            assert (await client.put(f"ImagingStudy/{ct['id']}", json=body)).status_code == 200

    asyncio.run(withdraw())
    orthanc.delete_study(CT_SMALL_STUDY)
    summary = sync(settings, QidoReader(orthanc.dicomweb))
    assert summary.reconciled is not None and summary.reconciled.unlinked == [CT_SMALL_STUDY]
    ct = studies(settings)[CT_SMALL_STUDY]
    assert ct["status"] == "entered-in-error" and "endpoint" not in ct


def test_reconcile_does_not_go_with_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sync-dicomweb", "http://127.0.0.1:1/dicom-web", "--reconcile", "--since", "7d"])
    assert exit_.value.code == 2 and "--reconcile needs the PACS's whole study list" in capsys.readouterr().err
