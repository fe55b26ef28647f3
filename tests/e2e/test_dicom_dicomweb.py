"""QIDO-RS from a real PACS into the mapping (fhir_imaging/dicom/dicomweb.py): Orthanc with its DICOMweb plugin,
fed pydicom's test files over its REST API and over STOW-RS. Nothing here writes to a FHIR server.

Spec: DICOM PS3.18 §10.6 (QIDO-RS), https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from fhir_imaging.dicom.dicomweb import PacsError, QidoReader
from fhir_imaging.dicom.importer import read_paths
from fhir_imaging.dicom.mapping import MappingOptions, from_dicom_dataset
from fhir_imaging.dicom.study import StudyGroup, group_studies
from fhir_imaging.validation import Validator
from tests.e2e.orthanc import OrthancProcess, orthanc_holding, sample_files

pytestmark = pytest.mark.e2e

DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    files = sample_files()
    with orthanc_holding(tmp_path_factory.mktemp("orthanc"), files[1:]) as pacs:
        stow = DICOMwebClient(pacs.dicomweb)
        stow.store_instances([pydicom.dcmread(files[0])])  # MR_small over STOW-RS, the rest over the REST API
        yield pacs


def groups_from_files() -> dict[str, StudyGroup]:
    read = read_paths(sample_files(), MappingOptions())
    return {group.uid: group for group in group_studies(read.records)}


def groups_from_pacs(reader: QidoReader, since: date | None = None) -> dict[str, StudyGroup]:
    records = [from_dicom_dataset(ds) for study in reader.studies(since) for ds in reader.study_datasets(study)]
    return {group.uid: group for group in group_studies(records)}


def test_qido_rs_finds_every_study(orthanc: OrthancProcess) -> None:
    studies = QidoReader(orthanc.dicomweb).studies()
    assert len(studies) == 8


def without_other_ids(patient: dict[str, Any]) -> dict[str, Any]:
    """The Patient with its first (PatientID) identifier only: Orthanc's QIDO-RS (DICOMweb plugin 1.7) leaves
    sequences such as OtherPatientIDsSequence out of its answers even when asked for them (its C-FIND does not)."""
    return {**patient, "identifier": patient["identifier"][:1]}


def test_qido_rs_maps_to_the_same_studies_and_patients_as_the_files(orthanc: OrthancProcess) -> None:
    from_pacs = groups_from_pacs(QidoReader(orthanc.dicomweb))
    from_files = groups_from_files()
    assert from_pacs.keys() == from_files.keys()
    for uid, group in from_files.items():
        assert from_pacs[uid].study == group.study, uid
        assert from_pacs[uid].patient == without_other_ids(group.patient), uid


def test_every_study_from_the_pacs_is_valid_fhir(orthanc: OrthancProcess) -> None:
    validator = Validator.load()
    for group in groups_from_pacs(QidoReader(orthanc.dicomweb)).values():
        resources: list[dict[str, Any]] = [{**group.study, "subject": {"reference": "Patient/p"}}, group.patient]
        for resource in resources:
            assert [i for i in validator.validate(resource) if i.severity in ("error", "fatal")] == []


def test_since_keeps_the_studies_from_that_date_on(orthanc: OrthancProcess) -> None:
    reader = QidoReader(orthanc.dicomweb)
    dates = sorted(group.study["started"][:10] for group in groups_from_pacs(reader, date(2002, 1, 1)).values())
    assert dates == ["2003-05-05", "2003-05-05", "2003-05-05", "2004-01-19", "2004-08-26"]


def test_body_part_and_study_time_come_through_qido(orthanc: OrthancProcess) -> None:
    groups = groups_from_pacs(QidoReader(orthanc.dicomweb))
    ct_small = groups["1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"]
    assert ct_small.study["started"] == "2004-01-19T07:27:30-05:00"
    series = [element for group in groups.values() for element in group.study["series"]]
    sites = {element["bodySite"]["code"] for element in series if "bodySite" in element}
    assert sites == {"122494005", "69536005"}


def test_a_wrong_dicomweb_root_is_a_clear_error(orthanc: OrthancProcess) -> None:
    with pytest.raises(PacsError, match=r"answered HTTP 404 to the study query"):
        QidoReader(f"{orthanc.url}/not-dicomweb").studies()
