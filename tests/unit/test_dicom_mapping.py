"""DICOM attributes → FHIR (fhir_imaging/dicom/mapping.py, study.py), on tables and on pydicom's real test files.

Spec: https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom, https://hl7.org/fhir/R4/datatypes.html#dateTime.
"""

from __future__ import annotations

import warnings
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag

from fhir_imaging.dicom.mapping import (
    BODY_PARTS,
    MappingError,
    MappingOptions,
    body_site,
    display_name,
    from_dicom_dataset,
    issuer_system,
    parse_date,
    parse_offset,
    parse_time,
    to_fhir_datetime,
    to_fhir_human_name,
)
from fhir_imaging.dicom.study import group_studies
from fhir_imaging.validation import Validator

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOMDIR_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


def header(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(path, stop_before_pixels=True)


def errors_of(validator: Validator, resource: dict[str, Any]) -> list[str]:
    issues = validator.validate(resource)
    return [f"{i.expression}: {i.diagnostics}" for i in issues if i.severity in ("error", "fatal")]


def with_subject(study: dict[str, Any]) -> dict[str, Any]:
    return {**study, "subject": {"reference": "Patient/p1"}}


@pytest.mark.parametrize(
    ("da", "tm", "offset", "zone", "expected"),
    [
        ("20040119", "072730", "-0500", None, "2004-01-19T07:27:30-05:00"),
        ("20040119", "072730", "+0000", None, "2004-01-19T07:27:30+00:00"),
        ("20040119", "072730.123456", "+0530", None, "2004-01-19T07:27:30.123456+05:30"),
        ("20040119", "0727", "+0100", None, "2004-01-19T07:27:00+01:00"),
        ("20040119", "07", "+0100", None, "2004-01-19T07:00:00+01:00"),
        ("20040119", "07:27:30", "+0100", None, "2004-01-19T07:27:30+01:00"),
        ("2004.01.19", "072730", "+0100", None, "2004-01-19T07:27:30+01:00"),
        # No offset: no timezone is invented, the date alone is exact.
        ("20040119", "072730", None, None, "2004-01-19"),
        ("20040119", None, "-0500", None, "2004-01-19"),
        ("20040119", "nonsense", "-0500", None, "2004-01-19"),
        ("20040119", "072730", "0500", None, "2004-01-19"),  # malformed offset counts as absent
        # A zone stated by the site (--timezone): its offset at that local time, daylight saving included.
        ("20240115", "103000", None, ZoneInfo("Europe/Paris"), "2024-01-15T10:30:00+01:00"),
        ("20240715", "103000", None, ZoneInfo("Europe/Paris"), "2024-07-15T10:30:00+02:00"),
        ("20240715", "103000", "-0400", ZoneInfo("Europe/Paris"), "2024-07-15T10:30:00-04:00"),  # header wins
        ("20240715", "103000", None, timezone(timedelta(hours=-3)), "2024-07-15T10:30:00-03:00"),
        (None, "103000", "+0100", None, None),
        ("", "", "", None, None),
        ("20241301", "103000", "+0100", None, None),
        ("2024011", "103000", "+0100", None, None),
    ],
)
def test_dates_and_times(da: Any, tm: Any, offset: Any, zone: Any, expected: str | None) -> None:
    assert to_fhir_datetime(da, tm, offset, zone) == expected


def test_every_datetime_produced_is_a_valid_fhir_datetime(validator: Validator) -> None:
    for value in ("2004-01-19T07:27:30-05:00", "2004-01-19T07:27:30.123456+05:30", "2004-01-19"):
        assert validator.validate_value("dateTime", value) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("235959", (23, 59, 59, "")),
        ("240000", None),
        ("1260", None),
        ("12", (12, 0, 0, "")),
        ("1.5", None),
        ("1²", None),  # str.isdigit() takes it, int() does not: a file's header must not stop an import
        ("101010.²", None),
    ],
)
def test_parse_time(text: str, expected: Any) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("text", "minutes"), [("+0000", 0), ("-0500", -300), ("+1400", 840), ("+1500", None), ("+01:00", None)]
)
def test_parse_offset(text: str, minutes: int | None) -> None:
    offset = parse_offset(text)
    assert (None if offset is None else offset.total_seconds() / 60) == minutes


def test_parse_date_rejects_impossible_dates() -> None:
    assert parse_date("20240230") is None and parse_date("20240229") is not None
    assert parse_date("2024²101") is None and parse_date("٢٠٢٤0101") is None


@pytest.mark.parametrize(
    ("pn", "name", "display"),
    [
        ("Doe^Archibald", {"family": "Doe", "given": ["Archibald"]}, "Archibald Doe"),
        (
            "Adams^John Robert Quincy^^Rev.^B.A. M.Div.",
            {"family": "Adams", "given": ["John Robert Quincy"], "prefix": ["Rev."], "suffix": ["B.A. M.Div."]},
            "Rev. John Robert Quincy Adams B.A. M.Div.",
        ),
        ("Morrison-Jones^Susan^Ann^Dr", {"family": "Morrison-Jones", "given": ["Susan", "Ann"], "prefix": ["Dr"]},
         "Dr Susan Ann Morrison-Jones"),
        ("Wang^XiaoDong=王^小東=", {"family": "Wang", "given": ["XiaoDong"]}, "XiaoDong Wang"),  # alphabetic group
        ("Anonymous", {"family": "Anonymous"}, "Anonymous"),
        ("^^^^", None, None),
        ("", None, None),
    ],
)  # fmt: skip
def test_person_names(pn: str, name: dict[str, Any] | None, display: str | None) -> None:
    assert to_fhir_human_name(pn) == name
    assert display_name(pn) == display


@pytest.mark.parametrize(
    ("issuer", "universal", "system"),
    [
        ("1.2.36.146.595.217.0.1", (None, None), "urn:oid:1.2.36.146.595.217.0.1"),
        ("HOSPITAL A", (None, None), "urn:fhir-imaging:dicom-issuer:HOSPITAL%20A"),
        ("MRN|Site/2", (None, None), "urn:fhir-imaging:dicom-issuer:MRN%7CSite%2F2"),
        ("urn:oid:1.2.3", (None, None), "urn:oid:1.2.3"),
        ("https://hospital.example.org/mrn", (None, None), "https://hospital.example.org/mrn"),
        ("1.2.3.", (None, None), "urn:fhir-imaging:dicom-issuer:1.2.3."),  # not an OID
        ("SITE", ("2.16.840.1.113883.19.5", "ISO"), "urn:oid:2.16.840.1.113883.19.5"),
        (None, ("B5F1C86E-5D6A-4F2B-8A6C-1C2D3E4F5A6B", "UUID"), "urn:uuid:b5f1c86e-5d6a-4f2b-8a6c-1c2d3e4f5a6b"),
        (None, (None, None), None),
        ("", (None, None), None),
    ],
)
def test_issuer_of_patient_id_becomes_a_uri(issuer: str | None, universal: tuple[Any, Any], system: str | None) -> None:
    assert issuer_system(issuer, *universal) == system


@pytest.mark.parametrize(
    ("term", "coding"),
    [
        ("CSPINE", {"system": "http://snomed.info/sct", "code": "122494005", "display": "Cervical spine"}),
        ("HEAD", {"system": "http://snomed.info/sct", "code": "69536005", "display": "Head"}),
        ("chest", {"system": "http://snomed.info/sct", "code": "816094009", "display": "Chest"}),
        ("KNEE", {"system": "http://snomed.info/sct", "code": "72696002", "display": "Knee"}),
        ("BRAINSTEM-ISH", {"display": "BRAINSTEM-ISH"}),  # no Annex L code: the text only
        ("", None),
    ],
)
def test_body_part_examined(term: str, coding: dict[str, str] | None) -> None:
    assert body_site(term) == coding


def test_body_part_table_is_small_and_all_snomed() -> None:
    assert 80 < len(BODY_PARTS) < 400
    for coding in BODY_PARTS.values():
        assert coding["system"] == "http://snomed.info/sct" and coding["code"].isdigit()


def test_ct_small_maps_to_the_expected_study_and_patient(validator: Validator) -> None:
    (group,) = group_studies([from_dicom_dataset(header("CT_small.dcm"))])
    uid = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert group.uid == uid
    assert group.study == {
        "resourceType": "ImagingStudy",
        "identifier": [{"use": "official", "system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "status": "available",
        "modality": [{"system": DCM, "code": "CT"}],
        "started": "2004-01-19T07:27:30-05:00",  # TimezoneOffsetFromUTC -0500
        "description": "e+1",
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "location": {"display": "JFK IMAGING CENTER"},  # InstitutionName (0008,0080)
        "series": [
            {
                "uid": "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
                "number": 1,
                "modality": {"system": DCM, "code": "CT"},
                "numberOfInstances": 1,
                "started": "1997-04-30T11:27:49-05:00",
                "instance": [
                    {
                        "uid": "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"},
                        "number": 1,
                        "title": "ORIGINAL\\PRIMARY\\AXIAL",  # ImageType (0008,0008), the last choice of HL7's map
                    }
                ],
            }
        ],
    }
    assert group.patient == {
        "resourceType": "Patient",
        "identifier": [{"value": "1CT1"}, {"value": "ABCD1234"}, {"value": "1234ABCD"}],  # OtherPatientIDsSequence
        "name": [{"family": "CompressedSamples", "given": ["CT1"]}],
        "gender": "other",
    }
    assert errors_of(validator, with_subject(group.study)) == []
    assert errors_of(validator, group.patient) == []


def test_mr_small_is_female_and_has_no_series_time() -> None:
    record = from_dicom_dataset(header("MR_small.dcm"))
    assert record.patient["gender"] == "female"
    assert record.study["started"] == "2004-08-26T18:50:59-04:00"
    assert "started" not in record.series and record.series["modality"]["code"] == "MR"


def test_patient_id_system_option_applies_without_an_issuer() -> None:
    record = from_dicom_dataset(header("MR_small.dcm"), MappingOptions(patient_id_system="urn:oid:1.2.3.4"))
    assert record.patient["identifier"] == [{"system": "urn:oid:1.2.3.4", "value": "4MR1"}]


def dicomdir_test_files() -> list[Dataset]:
    datasets = []
    for path in sorted(DICOMDIR_TESTS.rglob("*")):
        if path.is_file() and not path.name.startswith(("DICOMDIR", "README")):
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
    return datasets


def test_dicomdirtests_group_into_seven_studies_of_three_patients(validator: Validator) -> None:
    groups = group_studies(from_dicom_dataset(ds) for ds in dicomdir_test_files())
    summary = sorted(
        (g.patient["identifier"][0]["value"], [m["code"] for m in g.study["modality"]], g.study["numberOfSeries"],
         g.study["numberOfInstances"])
        for g in groups
    )  # fmt: skip
    assert summary == [
        ("12345678", ["CT"], 1, 50),
        ("77654033", ["CR"], 3, 3),
        ("77654033", ["CT"], 1, 4),
        ("98890234", ["CT"], 2, 7),
        ("98890234", ["MR"], 2, 2),
        ("98890234", ["MR"], 2, 4),
        ("98890234", ["MR"], 3, 11),
    ]
    for group in groups:
        assert errors_of(validator, with_subject(group.study)) == [], group.uid
        assert errors_of(validator, group.patient) == [], group.uid
        counts = [len(series["instance"]) for series in group.study["series"]]
        assert [series["numberOfInstances"] for series in group.study["series"]] == counts
        assert group.study["numberOfInstances"] == sum(counts)
        numbers = [series.get("number", -1) for series in group.study["series"]]
        assert numbers == sorted(numbers)


def test_body_part_examined_of_real_files_is_snomed() -> None:
    groups = group_studies(from_dicom_dataset(ds) for ds in dicomdir_test_files())
    sites = {s["bodySite"]["code"] for g in groups for s in g.study["series"] if "bodySite" in s}
    assert sites == {"122494005", "69536005"}  # CSPINE (the CR series), HEAD (the CT)


def built(**attributes: Any) -> Dataset:
    """A header made in memory: the required UIDs and modality, then ``attributes`` (odd values allowed)."""
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1", "DX"
    with config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return ds


def test_every_mapped_attribute_of_a_full_header(validator: Validator) -> None:
    issuer = Dataset()
    issuer.UniversalEntityID, issuer.UniversalEntityIDType = "2.16.840.1.113883.19.5", "ISO"
    ds = built(
        PatientID="P-7", IssuerOfPatientID="1.2.36.1", PatientName="Chalmers^Peter^James^^Jr", PatientSex="M",
        PatientBirthDate="19741225", AccessionNumber="W12342398", IssuerOfAccessionNumberSequence=[issuer],
        StudyDate="20110101", StudyTime="110120", TimezoneOffsetFromUTC="+0300", StudyDescription="XR Wrist 3+ Views",
        ReferringPhysicianName="Smith^Jane^^Dr", SeriesNumber="3", SeriesDescription="Wrist", BodyPartExamined="WRIST",
        Laterality="L", SeriesDate="20110101", SeriesTime="110200", InstanceNumber="2", ContentLabel="PA VIEW",
    )  # fmt: skip
    (group,) = group_studies([from_dicom_dataset(ds)])
    study, series, instance = group.study, group.study["series"][0], group.study["series"][0]["instance"][0]
    assert study["identifier"][1] == {
        "use": "usual",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
        "system": "urn:oid:2.16.840.1.113883.19.5",
        "value": "W12342398",
    }
    assert study["started"] == "2011-01-01T11:01:20+03:00"
    assert study["referrer"] == {"display": "Dr Jane Smith"}
    assert study["description"] == "XR Wrist 3+ Views"
    assert series["number"] == 3 and series["description"] == "Wrist"
    assert series["bodySite"] == {"system": "http://snomed.info/sct", "code": "74670003", "display": "Wrist joint"}
    left = {"system": "http://snomed.info/sct", "code": "419161000", "display": "Unilateral left"}
    assert series["laterality"] == left
    assert series["started"] == "2011-01-01T11:02:00+03:00"
    assert instance == {
        "uid": "1.2.3.4.5",
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1"},
        "number": 2,
        "title": "PA VIEW",
    }
    assert group.patient == {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.36.1", "value": "P-7"}],
        "name": [{"family": "Chalmers", "given": ["Peter", "James"], "suffix": ["Jr"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
    }
    assert errors_of(validator, with_subject(study)) == []
    assert errors_of(validator, group.patient) == []


@pytest.mark.parametrize(("sex", "gender"), [("M", "male"), ("F", "female"), ("O", "other"), ("", "unknown"),
                                             ("X", "unknown"), ("m", "male")])  # fmt: skip
def test_patient_sex(sex: str, gender: str) -> None:
    assert from_dicom_dataset(built(PatientID="1", PatientSex=sex)).patient["gender"] == gender


def test_a_study_without_patient_id_gets_a_patient_of_its_own() -> None:
    record = from_dicom_dataset(built(PatientID=""))
    assert record.patient["identifier"] == [{"system": "urn:fhir-imaging:patient-of-study", "value": "urn:oid:1.2.3"}]


def test_series_laterality_falls_back_on_image_laterality_when_all_instances_agree() -> None:
    first = from_dicom_dataset(built(ImageLaterality="R"))
    second = from_dicom_dataset(built(SOPInstanceUID="1.2.3.4.6", ImageLaterality="R"))
    (group,) = group_studies([first, second])
    assert group.study["series"][0]["laterality"]["code"] == "419465000"
    mixed = from_dicom_dataset(built(SOPInstanceUID="1.2.3.4.7", ImageLaterality="L"))
    (group,) = group_studies([first, second, mixed])
    assert "laterality" not in group.study["series"][0]


def test_bad_numbers_are_left_out() -> None:
    ds = built(SeriesNumber="-1")
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 4, b"abc ", 0, False, True)  # as read from a file
    record = from_dicom_dataset(ds)
    assert "number" not in record.series and "number" not in record.instance


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("StudyInstanceUID", "StudyInstanceUID (0020,000D)"),
        ("SeriesInstanceUID", "SeriesInstanceUID (0020,000E)"),
        ("Modality", "Modality (0008,0060)"),
    ],
)
def test_a_header_without_uid_or_modality_is_refused(missing: str, message: str) -> None:
    ds = built()
    delattr(ds, missing)
    with pytest.raises(MappingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dicom_dataset(ds)


def test_sop_uids_fall_back_on_the_file_meta() -> None:
    ds = built()
    del ds.SOPInstanceUID
    del ds.SOPClassUID
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID, ds.file_meta.MediaStorageSOPClassUID = "9.8.7", "1.2.840.10008.5.1.4.1.1.7"
    record = from_dicom_dataset(ds)
    assert record.sop_uid == "9.8.7"
    assert record.instance["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.7"


def test_procedure_reason_people_and_place() -> None:
    ds = header("MR_small.dcm")
    procedure, reason = Dataset(), Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning = "24627-2", "LN", "CT Chest"
    reason.CodeValue, reason.CodingSchemeDesignator, reason.CodeMeaning = "R-123", "99LOCAL", "Cough"
    ds.ProcedureCodeSequence = [procedure]
    ds.ReasonForRequestedProcedureCodeSequence = [reason]
    ds.ReasonForTheRequestedProcedure = "Persistent cough"
    ds.NameOfPhysiciansReadingStudy = ["Reader^Rita^^Dr", "----"]
    ds.PerformingPhysicianName = "Doe^John"
    ds.OperatorsName = ["Tech^Tom", "Tech^Tina"]
    ds.InstitutionName = "General Hospital"
    record = from_dicom_dataset(ds)
    assert record.study["procedureCode"] == [
        {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"}], "text": "CT Chest"}
    ]
    local = "urn:fhir-imaging:dicom-coding-scheme:99LOCAL"
    assert record.study["reasonCode"] == [
        {"coding": [{"system": local, "code": "R-123", "display": "Cough"}], "text": "Cough"},
        {"text": "Persistent cough"},
    ]
    assert record.study["interpreter"] == [{"display": "Dr Rita Reader"}]  # the placeholder ---- left out
    assert record.study["location"] == {"display": "General Hospital"}
    functions = [(p["function"]["coding"][0]["code"], p["actor"]["display"]) for p in record.series["performer"]]
    assert functions == [("PRF", "John Doe"), ("SPRF", "Tom Tech"), ("SPRF", "Tina Tech")]
    (group,) = group_studies([record])
    assert errors_of(Validator.load(), with_subject(group.study)) == []


def test_other_patient_ids_take_their_issuers() -> None:
    ds = header("MR_small.dcm")
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "X-9", "1.2.3.4"
    ds.OtherPatientIDsSequence = [other, other]
    record = from_dicom_dataset(ds)
    assert record.patient["identifier"][1:] == [{"system": "urn:oid:1.2.3.4", "value": "X-9"}]


@pytest.mark.parametrize(
    ("term", "code"),
    [("LEG", "30021000"), ("ARM", "40983000"), ("CHEST", "816094009"), ("CTSPINE", "1217257000"), ("leg", "30021000")],
)
def test_body_part_terms_old_and_new(term: str, code: str) -> None:
    from fhir_imaging.dicom.mapping import body_site

    site = body_site(term)
    assert site is not None and (site["system"], site["code"]) == ("http://snomed.info/sct", code)
