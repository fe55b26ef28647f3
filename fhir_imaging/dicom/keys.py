"""The attributes a PACS is asked for at each query level: QIDO-RS ``includefield`` (``dicomweb.py``) and C-FIND
return keys (``cfind.py``). One list for both, so the same PACS content maps to the same resources whichever way it
is read. Pure data.

Spec: DICOM PS3.4 C.6.2 (Study Root query/retrieve information model: which attributes live at which level),
PS3.18 §10.6.1 (QIDO-RS ``includefield``); https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom.
"""

from __future__ import annotations

PATIENT_FIELDS: tuple[str, ...] = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
PATIENT_FIELDS += ("OtherPatientIDsSequence",)
STUDY_FIELDS = (
    *PATIENT_FIELDS,
    *("StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "StudyDescription", "ReferringPhysicianName"),
    *("AccessionNumber", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    *("ProcedureCodeSequence", "NameOfPhysiciansReadingStudy", "InstitutionName"),
)
SERIES_FIELDS: tuple[str, ...] = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "Laterality")
SERIES_FIELDS += ("SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
SERIES_FIELDS += ("PerformingPhysicianName", "OperatorsName")
INSTANCE_FIELDS = ("SOPClassUID", "InstanceNumber", "ContentLabel", "DocumentTitle", "ImageType", "ImageLaterality")
UID_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# Attributes only a file (or a C-STORE) brings: a PACS is not asked for them.
FILE_ONLY_FIELDS: tuple[str, ...] = ("IssuerOfPatientIDQualifiersSequence", "IssuerOfAccessionNumberSequence")
FILE_ONLY_FIELDS += ("ReasonForRequestedProcedureCodeSequence", "ReasonForTheRequestedProcedure")
FILE_ONLY_FIELDS += ("RequestAttributesSequence", "ConceptNameCodeSequence")
MAPPED_FIELDS = (*UID_FIELDS, *STUDY_FIELDS, *SERIES_FIELDS, *INSTANCE_FIELDS, *FILE_ONLY_FIELDS)
"""Every top-level attribute ``mapping.from_dicom_dataset`` reads (a test holds it to that): the only ones read from
a file's header (``header.py``)."""
