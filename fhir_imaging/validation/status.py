"""The HTTP status of a rejected write: 400 or 422.

Spec: https://hl7.org/fhir/R4/http.html#create: 400 "Bad Request - resource could not be parsed or failed basic
FHIR validation rules"; 422 "Unprocessable Entity - the proposed resource violated applicable FHIR profiles or
server business rules".

The rule: the content is *basic-invalid* (400) when a strict FHIR JSON parser could not turn it into an instance of
the FHIR type model — an issue of code ``structure`` (unknown element, array where a single value belongs or the
reverse, empty array/object, misplaced ``null``, two types of one choice element, missing or unknown
``resourceType``) or ``value`` (a primitive of the wrong JSON type or not matching its datatype's regular
expression, an empty string). Every other error is a rule that a parsed instance breaks (``required``
cardinality, ``code-invalid`` required bindings, later ``invariant``): 422. When both kinds occur, 400 wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_imaging.fhir.outcome import Issue

BASIC_CODES = frozenset({"structure", "value"})
_ERRORS = frozenset({"error", "fatal"})


def has_errors(issues: Iterable[Issue]) -> bool:
    """True when at least one issue is an error (or fatal): the write must be rejected."""
    return any(issue.severity in _ERRORS for issue in issues)


def status_for(issues: Iterable[Issue]) -> int:
    """400 when any error is a basic FHIR JSON / datatype fault (``BASIC_CODES``), else 422."""
    return 400 if any(i.severity in _ERRORS and i.code in BASIC_CODES for i in issues) else 422
