"""Assemble a study's instances into its ImagingStudy and Patient, and merge them into what the server holds. Pure.

Spec: https://hl7.org/fhir/R4/imagingstudy.html (series, instance, numberOfSeries, numberOfInstances, modality) and
https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom.

Merging keeps whatever the server's copy has that DICOM does not speak about (a ``basedOn``, a ``procedureCode``,
manual notes), adds the series and instances it lacks, lets the DICOM values win for the elements DICOM feeds, and
recomputes the counts. Merging what the server already holds changes nothing, which makes imports idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_imaging.dicom.mapping import LATERALITY, V2_0203, InstanceRecord

STUDY_ORDER: tuple[str, ...] = (
    "resourceType",
    "id",
    "meta",
    "identifier",
    "status",
    "modality",
    "subject",
    "started",
    "basedOn",
    "referrer",
)
STUDY_ORDER += ("interpreter", "endpoint", "numberOfSeries", "numberOfInstances", "procedureCode", "location")
STUDY_ORDER += ("reasonCode", "description")
SERIES_ORDER: tuple[str, ...] = (
    "uid",
    "number",
    "modality",
    "description",
    "numberOfInstances",
    "bodySite",
    "laterality",
    "started",
)
SERIES_ORDER += ("performer",)
DICOM_STUDY_ELEMENTS = ("started", "referrer", "description")
DICOM_JOINED_ELEMENTS = ("procedureCode", "reasonCode")  # DICOM's codes added to those the server's copy has
DICOM_FILLED_ELEMENTS = ("interpreter", "location")  # DICOM's display names only where the server's copy has none
DICOM_PATIENT_ELEMENTS = ("name", "birthDate")


@dataclass(slots=True)
class StudyGroup:
    """One study assembled from its instances: the ImagingStudy (no subject yet) and its Patient."""

    uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    records: list[InstanceRecord] = field(default_factory=list)


def _by_number(element: dict[str, Any]) -> tuple[bool, int, str]:
    number = element.get("number")
    return number is None, number or 0, element["uid"]


def ordered(element: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """The same dict with the keys of ``order`` first (FHIR JSON does not need an order; readers like one)."""
    return {**{key: element[key] for key in order if key in element}, **element}


def finish_study(study: dict[str, Any]) -> dict[str, Any]:
    """Sort series and instances by number; compute the modality union, numberOfSeries and numberOfInstances."""
    series = sorted(study.get("series", []), key=_by_number)
    modalities = list(study.get("modality", []))
    total = 0
    for index, element in enumerate(series):
        if "instance" in element:
            element = {**element, "instance": sorted(element["instance"], key=_by_number)}
            element["numberOfInstances"] = len(element["instance"])
        total += element.get("numberOfInstances", 0)
        if element["modality"] not in modalities:
            modalities.append(element["modality"])
        series[index] = ordered(element, SERIES_ORDER)
    finished = {**study, "modality": modalities, "numberOfSeries": len(series), "numberOfInstances": total}
    if series:
        finished["series"] = series
    if not modalities:
        finished.pop("modality")
    return ordered(finished, STUDY_ORDER)


def merge_identifiers(*lists: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Identifiers of all lists, once each (same system and value), in order of first appearance."""
    merged: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for identifiers in lists:
        for identifier in identifiers:
            merged.setdefault((identifier.get("system"), identifier.get("value")), identifier)
    return list(merged.values())


def _series_laterality(series: dict[str, Any], records: list[InstanceRecord]) -> dict[str, Any]:
    """Series laterality from ImageLaterality (0020,0062) when Laterality is absent and every instance agrees."""
    if "laterality" in series:
        return series
    sides = {record.image_laterality for record in records}
    side = sides.pop() if len(sides) == 1 else None
    return {**series, "laterality": LATERALITY[side]} if side in LATERALITY else series


def to_fhir_imaging_study(records: Sequence[InstanceRecord]) -> dict[str, Any]:
    """The ImagingStudy of one study's instances (status ``available``; no subject: the caller sets it). The first
    instance with a study- or series-level value gives it; identifiers are collected from all instances."""
    study: dict[str, Any] = {"resourceType": "ImagingStudy", "status": "available"}
    series: dict[str, dict[str, Any]] = {}
    instances: dict[str, dict[str, dict[str, Any]]] = {}
    members: dict[str, list[InstanceRecord]] = {}
    identifiers: list[list[dict[str, Any]]] = []
    for record in records:
        if not identifiers or record.study["identifier"] != identifiers[-1]:  # mostly the same in every instance
            identifiers.append(record.study["identifier"])
        for key, value in record.study.items():
            study.setdefault(key, value)
        element = series.setdefault(record.series_uid, {})
        for key, value in record.series.items():
            element.setdefault(key, value)
        instances.setdefault(record.series_uid, {}).setdefault(record.sop_uid, record.instance)
        members.setdefault(record.series_uid, []).append(record)
    if identifiers:
        study["identifier"] = merge_identifiers(*identifiers)
    study["series"] = [
        {**_series_laterality(element, members[uid]), "instance": list(instances[uid].values())}
        for uid, element in series.items()
    ]
    return finish_study(study)


def group_studies(records: Iterable[InstanceRecord]) -> list[StudyGroup]:
    """Records grouped by StudyInstanceUID, each assembled into its ImagingStudy; the Patient is the first
    instance's. Studies come out in the order their first instance came in."""
    groups: dict[str, StudyGroup] = {}
    for record in records:
        group = groups.get(record.study_uid)
        if group is None:
            group = groups[record.study_uid] = StudyGroup(record.study_uid, record.patient, {})
        group.records.append(record)
    for group in groups.values():
        group.study = to_fhir_imaging_study(group.records)
    return list(groups.values())


def _union(first: Iterable[Any], second: Iterable[Any]) -> list[Any]:
    union = list(first)
    union.extend(item for item in second if item not in union)
    return union


def _merge_series(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = {**existing, **{key: value for key, value in new.items() if key != "instance"}}
    if "instance" in new:
        instances = {instance["uid"]: instance for instance in existing.get("instance", [])}
        for instance in new["instance"]:
            instances[instance["uid"]] = {**instances.get(instance["uid"], {}), **instance}
        merged["instance"] = list(instances.values())
    return merged


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without ``meta`` (what the server sets), for comparing content."""
    return {key: value for key, value in resource.items() if key != "meta"}


def merge_study(existing: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (from DICOM) merged into ``existing`` (the server's ImagingStudy, or ``None``); see the module doc."""
    if existing is None:
        return finish_study(new)
    merged = without_meta(existing)
    merged["identifier"] = merge_identifiers(existing.get("identifier", []), new.get("identifier", []))
    merged.update({key: new[key] for key in DICOM_STUDY_ELEMENTS if key in new})
    for key in DICOM_JOINED_ELEMENTS:
        if key in new:
            merged[key] = _union(existing.get(key, []), new[key])
    for key in DICOM_FILLED_ELEMENTS:
        if key in new and key not in merged:
            merged[key] = new[key]
    if merged.get("status") in (None, "registered", "unknown"):
        merged["status"] = new["status"]
    merged["modality"] = _union(existing.get("modality", []), new.get("modality", []))
    series = {element["uid"]: element for element in existing.get("series", [])}
    for element in new.get("series", []):
        series[element["uid"]] = _merge_series(series.get(element["uid"], {}), element)
    merged["series"] = list(series.values())
    if "endpoint" in new:
        merged["endpoint"] = _union(existing.get("endpoint", []), new["endpoint"])
    for item in new.get("basedOn", []):
        merged = with_order(merged, item["reference"])
    for element in merged["series"]:
        if "endpoint" in element:  # a series endpoint the study already names is noise
            element["endpoint"] = [ref for ref in element["endpoint"] if ref not in merged.get("endpoint", [])]
            if not element["endpoint"]:
                del element["endpoint"]
    return finish_study(merged)


def accession_number(study: dict[str, Any]) -> dict[str, Any] | None:
    """The study's accession number: its identifier of type ACSN (v2-0203), or ``None``."""
    for identifier in study.get("identifier", []):
        codings = identifier.get("type", {}).get("coding", [])
        if any(coding.get("system") == V2_0203 and coding.get("code") == "ACSN" for coding in codings):
            return dict(identifier)
    return None


def with_order(study: dict[str, Any], reference: str | None) -> dict[str, Any]:
    """``study`` based on the ServiceRequest ``reference`` too (``basedOn``), unless it already is (or none)."""
    based_on = study.get("basedOn", [])
    if reference is None or any(item.get("reference") == reference for item in based_on):
        return study
    return {**study, "basedOn": [*based_on, {"reference": reference}]}


def merge_patient(existing: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (from DICOM) merged into ``existing`` (the server's Patient, or ``None``): identifiers are joined; name
    and birth date are DICOM's when it has them; gender too, unless DICOM only says ``unknown``."""
    if existing is None:
        return new
    merged = without_meta(existing)
    merged["identifier"] = merge_identifiers(existing.get("identifier", []), new.get("identifier", []))
    merged.update({key: new[key] for key in DICOM_PATIENT_ELEMENTS if key in new})
    if new.get("gender", "unknown") != "unknown" or "gender" not in merged:
        merged["gender"] = new.get("gender", "unknown")
    return merged


def changed(existing: dict[str, Any] | None, merged: dict[str, Any]) -> bool:
    """Whether writing ``merged`` would change ``existing`` (``meta`` aside)."""
    return existing is None or without_meta(existing) != merged
