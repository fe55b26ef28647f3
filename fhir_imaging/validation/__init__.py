"""Resource validation against the FHIR R4 (4.0.1) definitions, before anything is stored.

Spec: https://hl7.org/fhir/R4/validation.html and https://hl7.org/fhir/R4/http.html (400 vs 422).

    validator = Validator.load()            # once at start-up (reads the shipped package data)
    issues = validator.validate(resource)   # pure and thread-safe; a list of Issue
    if any(i.severity in ("error", "fatal") for i in issues):
        raise FhirError(issues=issues, status=status_for(issues))

See docs/validation.md for what is checked and how the package data is derived (tools/derive_validation.py).
"""

from __future__ import annotations

from fhir_imaging.validation.status import BASIC_CODES, has_errors, status_for
from fhir_imaging.validation.validator import Validator

__all__ = ["BASIC_CODES", "Validator", "has_errors", "status_for"]
