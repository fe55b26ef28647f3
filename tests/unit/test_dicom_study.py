"""Merging DICOM content into what the server holds (fhir_imaging/dicom/study.py): idempotent, additive, counts kept.

Spec: https://hl7.org/fhir/R4/imagingstudy.html (numberOfSeries, numberOfInstances, series.numberOfInstances).
"""

from __future__ import annotations

import copy
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from fhir_imaging.dicom.mapping import InstanceRecord, from_dicom_dataset
from fhir_imaging.dicom.study import changed, group_studies, merge_patient, merge_study
from tests.unit.test_dicom_mapping import built, dicomdir_test_files


def records_of_study(uid_suffix: str) -> list[InstanceRecord]:
    records = [from_dicom_dataset(ds) for ds in dicomdir_test_files()]
    return [record for record in records if record.study_uid.endswith(uid_suffix)]


def as_stored(resource: dict[str, Any], id_: str = "s1", version: str = "1") -> dict[str, Any]:
    """What the server gives back: the JSON sent, plus id and meta."""
    return {**copy.deepcopy(resource), "id": id_, "meta": {"versionId": version, "lastUpdated": "2024-01-01T00:00:00Z"}}


def test_merging_the_same_content_again_changes_nothing() -> None:
    (group,) = group_studies(records_of_study("18148.0.1"))
    stored = as_stored({**group.study, "subject": {"reference": "Patient/p1"}})
    merged = merge_study(stored, group.study)
    assert not changed(stored, merged)
    assert merge_study(stored, merge_study(stored, group.study)) == merged


def test_new_instances_join_their_series_and_the_counts_follow() -> None:
    records = records_of_study("18148.0.1")  # 3 series, 11 instances
    first, rest = records[:4], records[4:]
    (partial,) = group_studies(first)
    stored = as_stored({**partial.study, "subject": {"reference": "Patient/p1"}})
    (full,) = group_studies(records)
    merged = merge_study(stored, group_studies(rest)[0].study)
    assert merged["numberOfInstances"] == 11 and merged["numberOfSeries"] == 3
    assert merged["series"] == full.study["series"]
    assert merged["subject"] == {"reference": "Patient/p1"} and merged["id"] == "s1"
    assert "meta" not in merged


def test_what_dicom_does_not_feed_is_kept_and_what_it_feeds_is_updated() -> None:
    (group,) = group_studies([from_dicom_dataset(pydicom.dcmread(get_testdata_file("CT_small.dcm")))])
    stored = as_stored(
        {
            **group.study,
            "subject": {"reference": "Patient/p1"},
            "status": "registered",
            "description": "old text",
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "identifier": [*group.study["identifier"], {"system": "urn:example", "value": "x"}],
        }
    )
    merged = merge_study(stored, group.study)
    assert merged["basedOn"] == [{"reference": "ServiceRequest/sr1"}]
    assert merged["description"] == "e+1" and merged["status"] == "available"
    assert {"system": "urn:example", "value": "x"} in merged["identifier"]
    assert len(merged["identifier"]) == 2
    cancelled = merge_study({**stored, "status": "entered-in-error"}, group.study)
    assert cancelled["status"] == "entered-in-error"  # a human decision DICOM does not override


def test_modality_is_the_union_of_the_series_modalities() -> None:
    ct = from_dicom_dataset(built(SeriesInstanceUID="1.2.3.1", SOPInstanceUID="1.2.3.1.1", Modality="CT"))
    pt = from_dicom_dataset(built(SeriesInstanceUID="1.2.3.2", SOPInstanceUID="1.2.3.2.1", Modality="PT"))
    other_ct = from_dicom_dataset(built(SeriesInstanceUID="1.2.3.3", SOPInstanceUID="1.2.3.3.1", Modality="CT"))
    (group,) = group_studies([ct, pt, other_ct])
    assert [coding["code"] for coding in group.study["modality"]] == ["CT", "PT"]
    (only_ct,) = group_studies([ct])
    merged = merge_study(as_stored(only_ct.study), group_studies([pt])[0].study)
    assert [coding["code"] for coding in merged["modality"]] == ["CT", "PT"]


def test_a_study_with_only_counts_gets_its_instances() -> None:
    (group,) = group_studies([from_dicom_dataset(built())])
    registered = {"resourceType": "ImagingStudy", "status": "registered", "subject": {"reference": "Patient/p"},
                  "identifier": group.study["identifier"], "numberOfSeries": 0, "numberOfInstances": 0}  # fmt: skip
    merged = merge_study(as_stored(registered), group.study)
    assert merged["numberOfSeries"] == 1 and merged["numberOfInstances"] == 1
    assert merged["status"] == "available"


def test_patient_merge() -> None:
    new = {"resourceType": "Patient", "identifier": [{"value": "1CT1"}], "name": [{"family": "New"}],
           "gender": "unknown"}  # fmt: skip
    stored = as_stored(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:x", "value": "7"}],
            "name": [{"family": "Old"}],
            "gender": "female",
            "telecom": [{"system": "phone", "value": "1"}],
        }
    )
    merged = merge_patient(stored, new)
    assert merged["name"] == [{"family": "New"}]
    assert merged["gender"] == "female"  # DICOM said nothing (unknown): kept
    assert merged["telecom"] == stored["telecom"]
    assert merged["identifier"] == [{"system": "urn:x", "value": "7"}, {"value": "1CT1"}]
    assert not changed(as_stored(merged), merge_patient(as_stored(merged), new))
    assert merge_patient(None, new) == new
    assert merge_patient(stored, {**new, "gender": "male"})["gender"] == "male"


def test_codes_are_joined_and_people_and_place_only_filled_in() -> None:
    from fhir_imaging.dicom.study import merge_study

    by_hand = {"coding": [{"system": "http://snomed.info/sct", "code": "169069000"}]}
    from_dicom = {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "CT Chest"}
    existing = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "procedureCode": [by_hand],
        "interpreter": [{"reference": "Practitioner/p1"}],
        "series": [],
    }
    new = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "procedureCode": [from_dicom, by_hand],
        "interpreter": [{"display": "Dr Rita Reader"}],
        "location": {"display": "General Hospital"},
        "series": [],
    }
    merged = merge_study(existing, new)
    assert merged["procedureCode"] == [by_hand, from_dicom]
    assert merged["interpreter"] == [{"reference": "Practitioner/p1"}]  # set by hand: kept
    assert merged["location"] == {"display": "General Hospital"}  # absent: filled in
    assert merge_study(merged, new) == merged  # idempotent
