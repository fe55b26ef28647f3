"""The pure parts of the DIMSE bridge (fhir_imaging/dicom/dimse.py, cfind.py): AE titles, the Endpoint address, the
C-FIND request identifiers and how answers of three levels make one instance.

Spec: DICOM PS3.5 §6.2 (AE), PS3.4 C.6.2 (Study Root keys).
"""

from __future__ import annotations

import pytest
from pydicom import Dataset

from fhir_imaging.dicom.cfind import (
    INSTANCES,
    STUDIES,
    combine,
    count_of,
    dimse_address,
    endpoint_for,
    query_identifier,
)
from fhir_imaging.dicom.dimse import check_ae_title
from fhir_imaging.validation import Validator


@pytest.mark.parametrize("title", ["ORTHANC", "FHIRIMAGING", "A", "STORE SCP 1", "x" * 16])
def test_valid_ae_titles(title: str) -> None:
    assert check_ae_title(title, "--aet") == title.strip()


@pytest.mark.parametrize("title", ["", "   ", "x" * 17, "BACK\\SLASH", "TAB\tX", "NUL\x00", "ÉTÉ"])
def test_invalid_ae_titles(title: str) -> None:
    with pytest.raises(ValueError, match="--aet"):
        check_ae_title(title, "--aet")


@pytest.mark.parametrize(
    ("aet", "host", "port", "address"),
    [
        ("ORTHANC", "pacs.example.org", 104, "dicom://ORTHANC@pacs.example.org:104"),
        ("MY PACS", "10.1.2.3", 4242, "dicom://MY%20PACS@10.1.2.3:4242"),
        ("A@B", "::1", 11112, "dicom://A%40B@[::1]:11112"),
    ],
)
def test_dimse_address(aet: str, host: str, port: int, address: str) -> None:
    assert dimse_address(aet, host, port) == address


def test_the_endpoint_of_a_dimse_peer() -> None:
    write = endpoint_for("ORTHANC", "127.0.0.1", 4242)
    assert write.resource["connectionType"] == {
        "system": "https://profiles.ihe.net/RO/SMRT/CodeSystem/dicom-endpoint-connection-type",
        "code": "dicom-dimse",
        "display": "DICOM DIMSE",
    }
    assert write.resource["name"] == "ORTHANC" and write.resource["address"] == "dicom://ORTHANC@127.0.0.1:4242"
    assert write.identifier == {"system": "urn:ietf:rfc:3986", "value": "dicom://ORTHANC@127.0.0.1:4242"}


def test_query_identifiers_ask_for_the_level_and_its_keys() -> None:
    study = query_identifier(STUDIES, ("PatientID", "StudyDate"), StudyDate="20240615-")
    assert (study.QueryRetrieveLevel, study.StudyInstanceUID, study.PatientID, study.StudyDate) == (
        "STUDY", "", "", "20240615-",
    )  # fmt: skip
    image = query_identifier(INSTANCES, ("SOPClassUID",), StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3")
    assert (image.QueryRetrieveLevel, image.SeriesInstanceUID, image.SOPInstanceUID) == ("IMAGE", "1.2.3", "")


def test_answers_combine_without_empty_or_query_only_elements() -> None:
    study, series, instance = Dataset(), Dataset(), Dataset()
    study.QueryRetrieveLevel, study.StudyInstanceUID, study.PatientName = "STUDY", "1.2", "Doe^Jane"
    study.StudyDescription = ""
    series.QueryRetrieveLevel, series.SeriesInstanceUID, series.Modality = "SERIES", "1.2.3", "CT"
    instance.SOPInstanceUID, instance.Modality, instance.SpecificCharacterSet = "1.2.3.4", "", "ISO_IR 100"
    combined = combine(study, series, instance)
    assert [element.keyword for element in combined] == [
        "SOPInstanceUID", "Modality", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
    ]  # fmt: skip
    assert combined.Modality == "CT"  # an empty value at a later level does not erase the series' value


@pytest.mark.parametrize(("value", "count"), [("12", 12), (" 7 ", 7), (3, 3), ("", None), ("-1", None), (None, None)])
def test_count_of(value: object, count: int | None) -> None:
    assert count_of(value) == count


def test_unlinking_a_study_from_a_pacs_it_left() -> None:
    from fhir_imaging.dicom.reconcile import study_uid, unlinked

    study = {
        "resourceType": "ImagingStudy",
        "id": "s1",
        "meta": {"versionId": "3"},
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "status": "available",
        "endpoint": [{"reference": "Endpoint/a"}, {"reference": "Endpoint/b"}],
        "series": [{"uid": "1.2.3.4", "endpoint": [{"reference": "Endpoint/a"}], "modality": {"code": "CT"}}],
    }
    assert study_uid(study) == "1.2.3"
    one_left = unlinked(study, "Endpoint/a")
    assert one_left["status"] == "available" and one_left["endpoint"] == [{"reference": "Endpoint/b"}]
    assert "endpoint" not in one_left["series"][0] and "meta" not in one_left
    none_left = unlinked(one_left, "Endpoint/b")
    assert none_left["status"] == "unknown" and "endpoint" not in none_left
    assert unlinked({**none_left, "status": "cancelled"}, "Endpoint/b")["status"] == "cancelled"


def test_the_dimse_endpoint_is_valid_r4() -> None:
    """Our validator, and fhir.resources as a second opinion (R4B's Endpoint is R4's)."""
    endpoint = {**endpoint_for("ORTHANC", "127.0.0.1", 4242).resource, "id": "pacs"}
    issues = Validator.load().validate(endpoint)
    assert [issue for issue in issues if issue.severity in ("error", "fatal")] == []
    assert {issue.code for issue in issues} <= {"invariant"}  # at most dom-6's warning: no narrative
    r4b = pytest.importorskip("fhir.resources.R4B.endpoint", reason="fhir.resources (test-only) is not installed")
    r4b.Endpoint.model_validate(endpoint)
