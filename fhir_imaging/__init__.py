"""fhir-imaging: a FHIR R4 (4.0.1) server for medical imaging."""

from __future__ import annotations

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
