"""DICOM attributes → FHIR R4 Patient and ImagingStudy, following HL7's DICOM mapping. Pure: no I/O.

Spec: https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom (which attribute feeds which element),
https://hl7.org/fhir/R4/datatypes.html#dateTime (a time needs a timezone), DICOM PS3.5 §6.2 (DA, TM, PN, IS value
representations) and PS3.16 Annex L (Body Part Examined → SNOMED CT, shipped as ``data/body-part-examined.json``).

``from_dicom_dataset`` turns one instance's header (a pydicom ``Dataset`` read from a file, or built from a QIDO-RS
answer) into an ``InstanceRecord`` of FHIR fragments; ``study.py`` assembles the records of a study into its
ImagingStudy and Patient. Decisions (see docs/dicom.md):

- Without TimezoneOffsetFromUTC (0008,0201), ``started`` is the date only: FHIR requires a timezone with a time and
  the modality's zone is unknown. ``MappingOptions.timezone`` (``--timezone Europe/Paris``) states the zone instead.
- IssuerOfPatientID (0010,0021) becomes the identifier system: ``urn:oid:`` for an OID (or the ISO universal id of
  its qualifiers), the issuer itself when it already is a URI, else ``urn:fhir-imaging:dicom-issuer:`` + the
  percent-encoded issuer. Without an issuer, ``MappingOptions.patient_id_system`` or no system at all.
- A study without PatientID gets a Patient of its own, identified by ``urn:fhir-imaging:patient-of-study``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote

from pydicom.multival import MultiValue

from fhir_imaging import linear_regex
from fhir_imaging.dicom.coding_schemes import fhir_system

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_UID_SYSTEM = "urn:dicom:uid"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
ISSUER_SYSTEM_PREFIX = "urn:fhir-imaging:dicom-issuer:"
PATIENT_OF_STUDY_SYSTEM = "urn:fhir-imaging:patient-of-study"
SEX_TO_GENDER = {"M": "male", "F": "female", "O": "other"}
# R4 ValueSet bodysite-laterality (the codes of HL7's own ImagingStudy example).
LATERALITY = {
    "L": {"system": SNOMED, "code": "419161000", "display": "Unilateral left"},
    "R": {"system": SNOMED, "code": "419465000", "display": "Unilateral right"},
    "B": {"system": SNOMED, "code": "51440002", "display": "Bilateral"},
}
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PARTICIPATION = {
    "PRF": {"system": PARTICIPATION_TYPE, "code": "PRF", "display": "performer"},
    "SPRF": {"system": PARTICIPATION_TYPE, "code": "SPRF", "display": "secondary performer"},
}
_OID = linear_regex.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = linear_regex.compile(linear_regex.ascii_whitespace(r"(urn:|https?://)\S+"))  # no \v: FHIR's uri
_OFFSET = linear_regex.compile(r"([+-])(\d\d)(\d\d)")
# Pure conversions whose results are remembered, for values up to CACHED_TEXT characters (a bounded memory).
CACHE_SIZE, CACHED_TEXT = 1024, 256


class MappingError(ValueError):
    """The header lacks what an ImagingStudy needs (a UID, the modality): the file is reported and skipped."""


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """Site choices: the timezone of headers without an offset, the system of PatientIDs without an issuer."""

    timezone: tzinfo | None = None
    patient_id_system: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One SOP instance as FHIR fragments: its Patient, study-level elements, series element and instance element."""

    study_uid: str
    series_uid: str
    sop_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    image_laterality: str | None = None


def _load_body_parts() -> dict[str, dict[str, str]]:
    data = json.loads((resources.files("fhir_imaging.dicom") / "data" / "body-part-examined.json").read_text())
    return {term: {"system": data["system"], **coding} for term, coding in data["terms"].items()}


BODY_PARTS = _load_body_parts()


# --- value representations -------------------------------------------------------------------------------------


def text_of(value: Any) -> str | None:
    """A DICOM value as stripped text (multi-values joined by ``\\``); ``None`` when empty or absent."""
    if value is None:
        return None
    if type(value) is str:  # the common case, first
        text = value.replace("\x00", "").strip()
        return text or None
    if isinstance(value, list | tuple | MultiValue):
        value = "\\".join(str(item) for item in value)
    text = str(value).replace("\x00", "").strip()
    return text or None


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²`` and other digits that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def parse_date(text: str | None) -> date | None:
    """DA (``YYYYMMDD``, or the old ``YYYY.MM.DD``) → date; ``None`` when absent or not a date."""
    digits = (text or "").strip().replace(".", "")
    if len(digits) != 8 or not _digits(digits):
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def parse_time(text: str | None) -> tuple[int, int, int, str] | None:
    """TM (``HH``, ``HHMM``, ``HHMMSS`` or ``HHMMSS.FFFFFF``; old ``HH:MM:SS``) → (hour, minute, second, fraction)."""
    main, _, fraction = (text or "").strip().replace(":", "").partition(".")
    if len(main) not in (2, 4, 6) or not _digits(main) or (fraction and not _digits(fraction)):
        return None
    hour, minute, second = int(main[:2]), int(main[2:4] or 0), int(main[4:6] or 0)
    if hour > 23 or minute > 59 or second > 60:
        return None
    return hour, minute, min(second, 59), fraction[:6]


def parse_offset(text: str | None) -> timedelta | None:
    """TimezoneOffsetFromUTC (``+HHMM`` / ``-HHMM``) → timedelta; ``None`` when absent or malformed."""
    match = _OFFSET.fullmatch((text or "").strip())
    if not match or int(match[2]) > 14 or int(match[3]) > 59:
        return None
    offset = timedelta(hours=int(match[2]), minutes=int(match[3]))
    return -offset if match[1] == "-" else offset


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def to_fhir_datetime(da: str | None, tm: str | None, offset: str | None, zone: tzinfo | None = None) -> str | None:
    """DA + TM (+ TimezoneOffsetFromUTC) → FHIR dateTime. With a time but no offset and no assumed ``zone``, only
    the date: a FHIR dateTime with a time must carry a timezone, and none is invented. (Values of a usual length
    are remembered: the files of one series repeat them.)"""
    if len(da or "") + len(tm or "") + len(offset or "") <= CACHED_TEXT:
        return _cached_datetime(da, tm, offset, zone)
    return _to_fhir_datetime(da, tm, offset, zone)


def _to_fhir_datetime(da: str | None, tm: str | None, offset: str | None, zone: tzinfo | None) -> str | None:
    day = parse_date(da)
    if day is None:
        return None
    time = parse_time(tm)
    delta = parse_offset(offset)
    if time is None or (delta is None and zone is None):
        return day.isoformat()
    hour, minute, second, fraction = time
    if delta is None:
        delta = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone).utcoffset() or timedelta()
    stamp = f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}" + (f".{fraction}" if fraction else "")
    return stamp + _format_offset(delta)


_cached_datetime = lru_cache(maxsize=CACHE_SIZE)(_to_fhir_datetime)


def _unsigned(text: str | None) -> int | None:
    try:
        number = int(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def to_fhir_human_name(pn: str | None) -> dict[str, Any] | None:
    """PN (alphabetic group ``family^given^middle^prefix^suffix``) → HumanName."""
    components = [part.strip() for part in (pn or "").split("=")[0].split("^")] + [""] * 5
    family, given, middle, prefix, suffix = components[:5]
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [part for part in (given, middle) if part]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name or None


def display_name(pn: str | None) -> str | None:
    """PN → a readable name, ``prefix given middle family suffix`` (for Reference.display)."""
    name = to_fhir_human_name(pn)
    if name is None:
        return None
    parts = [*name.get("prefix", []), *name.get("given", []), name.get("family", ""), *name.get("suffix", [])]
    return " ".join(part for part in parts if part)


def issuer_system(issuer: str | None, universal_id: str | None = None, universal_type: str | None = None) -> str | None:
    """IssuerOfPatientID (and its qualifiers' UniversalEntityID) → Identifier.system (see the module docstring).
    (Values of a usual length are remembered: the files of one site repeat them.)"""
    if len(issuer or "") + len(universal_id or "") + len(universal_type or "") <= CACHED_TEXT:
        return _cached_issuer_system(issuer, universal_id, universal_type)
    return _issuer_system(issuer, universal_id, universal_type)


def _issuer_system(issuer: str | None, universal_id: str | None, universal_type: str | None) -> str | None:
    if universal_id:
        kind = (universal_type or "").upper()
        if kind == "ISO" and _OID.fullmatch(universal_id):
            return f"urn:oid:{universal_id}"
        if kind == "UUID":
            return f"urn:uuid:{universal_id.lower()}"
        if kind in ("URI", "URL") and _URI.fullmatch(universal_id):
            return universal_id
    if not issuer:
        return None
    if _OID.fullmatch(issuer):
        return f"urn:oid:{issuer}"
    if _URI.fullmatch(issuer):
        return issuer
    return ISSUER_SYSTEM_PREFIX + quote(issuer, safe="")


_cached_issuer_system = lru_cache(maxsize=CACHE_SIZE)(_issuer_system)


def body_site(term: str | None) -> dict[str, str] | None:
    """BodyPartExamined → SNOMED CT Coding when PS3.16 Annex L gives one, else a Coding with display text only."""
    if not term:
        return None
    return dict(BODY_PARTS.get(term.upper(), {"display": term}))


# --- one instance -----------------------------------------------------------------------------------------------


def _get(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # a malformed value raises while pydicom converts it: treat it as absent
        return None


def _text(ds: Any, keyword: str) -> str | None:
    return text_of(_get(ds, keyword))


def _first_item(ds: Any, keyword: str) -> Any:
    sequence = _get(ds, keyword)
    try:
        return sequence[0] if sequence else None
    except (TypeError, IndexError):
        return None


def _qualified_system(ds: Any, issuer: str | None, sequence: str) -> str | None:
    item = _first_item(ds, sequence)
    universal = (_text(item, "UniversalEntityID"), _text(item, "UniversalEntityIDType")) if item else (None, None)
    return issuer_system(issuer or (_text(item, "LocalNamespaceEntityID") if item else None), *universal)


def _patient(ds: Any, study_uid: str, options: MappingOptions) -> dict[str, Any]:
    patient_id = _text(ds, "PatientID")
    if patient_id:
        system = _qualified_system(ds, _text(ds, "IssuerOfPatientID"), "IssuerOfPatientIDQualifiersSequence")
        system = system or options.patient_id_system
        identifier = {"system": system, "value": patient_id} if system else {"value": patient_id}
    else:
        identifier = {"system": PATIENT_OF_STUDY_SYSTEM, "value": f"urn:oid:{study_uid}"}
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [identifier, *_other_ids(ds, options)]}
    name = to_fhir_human_name(_text(ds, "PatientName"))
    if name:
        patient["name"] = [name]
    patient["gender"] = SEX_TO_GENDER.get((_text(ds, "PatientSex") or "").upper(), "unknown")
    birth = parse_date(_text(ds, "PatientBirthDate"))
    if birth:
        patient["birthDate"] = birth.isoformat()
    return patient


def _study(ds: Any, study_uid: str, options: MappingOptions) -> dict[str, Any]:
    uid = {"use": "official", "system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}
    identifiers: list[dict[str, Any]] = [uid]
    accession = _text(ds, "AccessionNumber")
    if accession:
        acsn: dict[str, Any] = {"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}}
        system = _qualified_system(ds, None, "IssuerOfAccessionNumberSequence")
        identifiers.append({**acsn, **({"system": system} if system else {}), "value": accession})
    study: dict[str, Any] = {"identifier": identifiers}
    offset = _text(ds, "TimezoneOffsetFromUTC")
    started = to_fhir_datetime(_text(ds, "StudyDate"), _text(ds, "StudyTime"), offset, options.timezone)
    referrer = display_name(_text(ds, "ReferringPhysicianName"))
    description = _text(ds, "StudyDescription")
    if started:
        study["started"] = started
    if referrer:
        study["referrer"] = {"display": referrer}
    if description:
        study["description"] = description
    procedures = _concepts(ds, "ProcedureCodeSequence")
    reasons = _concepts(ds, "ReasonForRequestedProcedureCodeSequence")
    reason_text = _text(ds, "ReasonForTheRequestedProcedure") or _text(
        _first_item(ds, "RequestAttributesSequence"), "ReasonForTheRequestedProcedure"
    )
    if reason_text and not any(concept.get("text") == reason_text for concept in reasons):
        reasons.append({"text": reason_text})
    interpreters = _names(ds, "NameOfPhysiciansReadingStudy")
    institution = _text(ds, "InstitutionName")
    if procedures:
        study["procedureCode"] = procedures
    if reasons:
        study["reasonCode"] = reasons
    if interpreters:
        study["interpreter"] = [{"display": name} for name in interpreters]
    if institution:
        study["location"] = {"display": institution}
    return study


def _names(ds: Any, keyword: str) -> list[str]:
    """Each value of a PN attribute as a display name; placeholders without a letter or digit (``----``) left out."""
    value = _get(ds, keyword) if ds is not None else None
    values = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    names = [display_name(text_of(item)) for item in values if item is not None]
    return [name for name in names if name and any(char.isalnum() for char in name)]


def _concepts(ds: Any, keyword: str) -> list[dict[str, Any]]:
    """A code sequence (CodeValue, CodingSchemeDesignator, CodeMeaning) → CodeableConcepts, one per item."""
    concepts: list[dict[str, Any]] = []
    sequence = _get(ds, keyword)
    try:
        items = list(sequence) if sequence else []
    except TypeError:
        return concepts
    for item in items:
        code, meaning = _text(item, "CodeValue") or _text(item, "LongCodeValue"), _text(item, "CodeMeaning")
        if not code:
            if meaning:
                concepts.append({"text": meaning})
            continue
        system = fhir_system(_text(item, "CodingSchemeDesignator"))
        coding = {"system": system, "code": code, "display": meaning}
        concept: dict[str, Any] = {"coding": [{key: value for key, value in coding.items() if value}]}
        if meaning:
            concept["text"] = meaning
        if concept not in concepts:
            concepts.append(concept)
    return concepts


def _other_ids(ds: Any, options: MappingOptions) -> list[dict[str, Any]]:
    """OtherPatientIDsSequence (0010,1002) → more Patient.identifier, each with its issuer's system as for
    PatientID; the main PatientID stays first (it is how the Patient is found)."""
    identifiers: list[dict[str, Any]] = []
    sequence = _get(ds, "OtherPatientIDsSequence")
    try:
        items = list(sequence) if sequence else []
    except TypeError:
        return identifiers
    for item in items:
        value = _text(item, "PatientID")
        if not value:
            continue
        system = _qualified_system(item, _text(item, "IssuerOfPatientID"), "IssuerOfPatientIDQualifiersSequence")
        system = system or options.patient_id_system
        identifier = {"system": system, "value": value} if system else {"value": value}
        if identifier not in identifiers:
            identifiers.append(identifier)
    return identifiers


def _series(ds: Any, series_uid: str, modality: str, options: MappingOptions) -> dict[str, Any]:
    offset = _text(ds, "TimezoneOffsetFromUTC")
    values = {
        "uid": series_uid,
        "number": _unsigned(_text(ds, "SeriesNumber")),
        "modality": {"system": DCM, "code": modality},
        "description": _text(ds, "SeriesDescription"),
        "bodySite": body_site(_text(ds, "BodyPartExamined")),
        "laterality": LATERALITY.get((_text(ds, "Laterality") or "").upper()),
        "started": to_fhir_datetime(_text(ds, "SeriesDate"), _text(ds, "SeriesTime"), offset, options.timezone),
        "performer": _performers(ds),
    }
    return {key: value for key, value in values.items() if value is not None}


def _performers(ds: Any) -> list[dict[str, Any]] | None:
    """series.performer: PerformingPhysicianName (0008,1050) as performer (PRF), OperatorsName (0008,1070) as
    secondary performer (SPRF), display names only."""
    performers = [
        {"function": {"coding": [PARTICIPATION[function]]}, "actor": {"display": name}}
        for keyword, function in (("PerformingPhysicianName", "PRF"), ("OperatorsName", "SPRF"))
        for name in _names(ds, keyword)
    ]
    return performers or None


def _title(ds: Any) -> str | None:
    """instance.title: ContentLabel | ConceptNameCodeSequence > CodeMeaning | DocumentTitle | ImageType (HL7 map)."""
    concept = _first_item(ds, "ConceptNameCodeSequence")
    for candidate in (
        _text(ds, "ContentLabel"),
        _text(concept, "CodeMeaning") if concept else None,
        _text(ds, "DocumentTitle"),
        _text(ds, "ImageType"),
    ):
        if candidate:
            return candidate
    return None


def from_dicom_dataset(ds: Any, options: MappingOptions | None = None) -> InstanceRecord:
    """One instance's header → ``InstanceRecord``; ``MappingError`` when a UID or the modality is missing."""
    options = options or MappingOptions()
    meta = getattr(ds, "file_meta", None)
    study_uid = _text(ds, "StudyInstanceUID")
    series_uid = _text(ds, "SeriesInstanceUID")
    sop_uid = _text(ds, "SOPInstanceUID") or (_text(meta, "MediaStorageSOPInstanceUID") if meta else None)
    sop_class = _text(ds, "SOPClassUID") or (_text(meta, "MediaStorageSOPClassUID") if meta else None)
    modality = _text(ds, "Modality")
    required = {
        "StudyInstanceUID (0020,000D)": study_uid,
        "SeriesInstanceUID (0020,000E)": series_uid,
        "SOPInstanceUID (0008,0018)": sop_uid,
        "SOPClassUID (0008,0016)": sop_class,
        "Modality (0008,0060)": modality,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise MappingError("missing " + ", ".join(missing))
    assert study_uid and series_uid and sop_uid and sop_class and modality  # for the type checker
    instance: dict[str, Any] = {"uid": sop_uid}
    instance["sopClass"] = {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{sop_class}"}
    number = _unsigned(_text(ds, "InstanceNumber"))
    if number is not None:
        instance["number"] = number
    title = _title(ds)
    if title:
        instance["title"] = title
    return InstanceRecord(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        patient=_patient(ds, study_uid, options),
        study=_study(ds, study_uid, options),
        series=_series(ds, series_uid, modality, options),
        instance=instance,
        image_laterality=(_text(ds, "ImageLaterality") or "").upper() or None,
    )


def offset_timezone(text: str) -> tzinfo:
    """``+HHMM`` / ``-HHMM`` → a fixed-offset tzinfo (for ``--timezone +0100``)."""
    delta = parse_offset(text)
    if delta is None:
        raise ValueError(f"not a UTC offset: {text!r}")
    return timezone(delta)
