"""ImagingStudy.basedOn from the accession number: a study points at the one ServiceRequest whose identifier is its
AccessionNumber (0008,0050), found by search before the write; no order, or several, leaves basedOn out and the
study is written all the same. In-process on a database and over HTTP to a running server.

Spec: https://hl7.org/fhir/R4/imagingstudy-definitions.html#ImagingStudy.basedOn,
https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom (AccessionNumber), docs/dicom.md (*The mapping*).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from fhir_imaging.client import RemoteServer, fhir_client
from fhir_imaging.config import Settings
from fhir_imaging.dicom.importer import ImportSummary, import_dicom
from tests.e2e.server import running_server

pytestmark = pytest.mark.e2e

ISSUER = "urn:oid:1.2.826.0.1.3680043.10.99"


class Target:
    """Where the import writes: a database in this process, or a running server over HTTP."""

    def __init__(self, settings: Settings | None = None, server: RemoteServer | None = None) -> None:
        self.settings, self.server = settings, server

    def client(self) -> Any:
        return fhir_client(server=self.server) if self.server else fhir_client(settings=self.settings)

    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            async with self.client() as client:
                response = await client.request(method, url, json=body)
                assert response.status_code in (200, 201), response.text
                answer: dict[str, Any] = response.json()
                return answer

        return asyncio.run(run())

    def order(self, accession: str, system: str | None = ISSUER) -> str:
        identifier = {"system": system, "value": accession} if system else {"value": accession}
        order = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"display": "someone"},
            "identifier": [{"type": {"coding": [{"system": V2, "code": "ACSN"}]}, **identifier}],
        }
        return f"ServiceRequest/{self.request('POST', 'ServiceRequest', order)['id']}"

    def study(self, uid: str) -> dict[str, Any]:
        bundle = self.request("GET", f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}")
        (entry,) = bundle["entry"]
        resource: dict[str, Any] = entry["resource"]
        return resource

    def import_files(self, *paths: Path) -> ImportSummary:
        return asyncio.run(import_dicom(paths, server=self.server, settings=self.settings))


V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    """One running server for the module (each test uses accession numbers of its own)."""
    with running_server(f"sqlite:///{tmp_path_factory.mktemp('served') / 'served.db'}") as server:
        yield RemoteServer(server.base)


@pytest.fixture(params=["database", "server"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "database":
        return Target(settings=Settings(database=f"sqlite:///{tmp_path / 'orders.db'}", sqlite_synchronous="normal"))
    return Target(server=request.getfixturevalue("served"))


def ct_study(folder: Path, accession: str, issuer: str | None = ISSUER) -> tuple[Path, str]:
    """CT_small.dcm as a new study with ``accession`` (issued by ``issuer``)."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.AccessionNumber = accession
    if issuer:
        item = Dataset()
        item.UniversalEntityID, item.UniversalEntityIDType = issuer.removeprefix("urn:oid:"), "ISO"
        ds.IssuerOfAccessionNumberSequence = [item]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.StudyInstanceUID}.dcm"
    ds.save_as(path)
    return path, str(ds.StudyInstanceUID)


def test_a_study_points_at_the_order_of_its_accession_number(tmp_path: Path, target: Target) -> None:
    order = target.order("ACC-1")
    target.order("ACC-2")  # another order
    target.order("ACC-1", system="urn:oid:1.2.3.4")  # the same number from another issuer
    path, uid = ct_study(tmp_path / "files", "ACC-1")
    summary = target.import_files(path)
    assert summary.tally.studies_created == 1 and summary.tally.failed == []
    study = target.study(uid)
    assert study["basedOn"] == [{"reference": order}]
    acsn = [i for i in study["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"]
    assert acsn == [{"use": "usual", "type": {"coding": [{"system": V2, "code": "ACSN"}]}, "system": ISSUER,
                     "value": "ACC-1"}]  # fmt: skip
    again = target.import_files(path)
    assert again.tally.studies_unchanged == 1 and target.study(uid)["meta"]["versionId"] == "1"


def test_without_an_order_the_study_is_written_without_based_on(tmp_path: Path, target: Target) -> None:
    path, uid = ct_study(tmp_path / "files", "NO-SUCH-ORDER")
    summary = target.import_files(path)
    assert summary.tally.studies_created == 1 and summary.tally.failed == []
    assert "basedOn" not in target.study(uid)
    order = target.order("NO-SUCH-ORDER")  # the order arrives later: the next import links it
    later = target.import_files(path)
    assert later.tally.studies_updated == 1
    assert target.study(uid)["basedOn"] == [{"reference": order}]


def test_several_orders_with_the_accession_number_leave_based_on_out(tmp_path: Path, target: Target) -> None:
    target.order("TWICE", system=None)
    target.order("TWICE", system="urn:oid:1.2.3.4")
    path, uid = ct_study(tmp_path / "files", "TWICE", issuer=None)  # no issuer: any system matches
    summary = target.import_files(path)
    assert summary.tally.studies_created == 1 and summary.tally.failed == []
    assert "basedOn" not in target.study(uid)


def test_a_based_on_set_by_hand_is_kept(tmp_path: Path, target: Target) -> None:
    order = target.order("ACC-3")
    path, uid = ct_study(tmp_path / "files", "ACC-3")
    target.import_files(path)
    study = target.study(uid)
    manual = {"reference": "ServiceRequest/by-hand", "display": "set by hand"}
    study["basedOn"] = [manual]
    target.request("PUT", f"ImagingStudy/{study['id']}", study)
    more, _ = ct_study(tmp_path / "more", "ACC-3")
    ds = pydicom.dcmread(more)
    ds.StudyInstanceUID = uid
    ds.save_as(more)
    target.import_files(more)
    assert target.study(uid)["basedOn"] == [manual, {"reference": order}]
