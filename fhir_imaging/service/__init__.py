"""The operations a FHIR server offers, over plain values and knowing nothing of HTTP: read, vread, create, update,
patch, delete and their conditional forms, search, history, batch and transaction, $validate. REST handlers
(``api/``) and Bundle entries both call them, so conditional semantics, retries, id checks and reference checks exist
once; every call names its ``Caller`` and runs over an explicit storage ``Reader`` / ``Transaction``.
"""

from __future__ import annotations

from fhir_imaging.service.caller import ANONYMOUS, Caller
from fhir_imaging.service.core import Bases, FhirService, Written

__all__ = ["ANONYMOUS", "Bases", "Caller", "FhirService", "Written"]
