"""DICOM Coding Scheme Designators (0008,0102) → FHIR code system URIs, for the coded sequences the mapping reads
(ProcedureCodeSequence, ReasonForRequestedProcedureCodeSequence). Pure data.

Spec: DICOM PS3.16 §8 (Coding Scheme Designators and their HL7 FHIR URIs), https://hl7.org/fhir/R4/terminologies-
systems.html. Only schemes whose codes are the same codes in the FHIR system are mapped: SRT (SNOMED-RT style
``R-…`` codes) is not SNOMED CT, so it is not mapped to ``http://snomed.info/sct``. Any other designator becomes
``urn:fhir-imaging:dicom-coding-scheme:`` + the percent-encoded designator (a local, unregistered form: the same
scheme always gives the same system, as for patient ID issuers).
"""

from __future__ import annotations

from urllib.parse import quote

LOCAL_SCHEME_PREFIX = "urn:fhir-imaging:dicom-coding-scheme:"
FHIR_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "UCUM": "http://unitsofmeasure.org",
    "RADLEX": "http://radlex.org",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10": "http://hl7.org/fhir/sid/icd-10",
}


def fhir_system(designator: str | None) -> str | None:
    """The Coding.system of a Coding Scheme Designator; ``None`` without a designator."""
    if not designator:
        return None
    return FHIR_SYSTEMS.get(designator.upper(), LOCAL_SCHEME_PREFIX + quote(designator, safe=""))
