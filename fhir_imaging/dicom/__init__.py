"""The DICOM bridge: DICOM attributes → FHIR R4 Patient and ImagingStudy (``mapping``), merged into what the server
already holds (``merge``) and written as one transaction Bundle per study (``bundle``), from files (``importer``) or
from a PACS over QIDO-RS (``dicomweb``).

Spec: https://hl7.org/fhir/R4/imagingstudy-mappings.html#dicom and https://hl7.org/fhir/R4/imagingstudy.html.
See docs/dicom.md.
"""
