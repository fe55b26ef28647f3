"""OperationOutcome issues and the one family of FHIR errors.

Spec: https://hl7.org/fhir/R4/operationoutcome.html and https://hl7.org/fhir/R4/http.html

Every failure anywhere in the server is a ``FhirError`` carrying an HTTP status and a list of ``Issue``;
``api/errors.py`` is the only place that turns one into a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: severity, code (IssueType), a human message and the FHIRPath location."""

    severity: str  # fatal | error | warning | information
    code: str  # structure | required | value | invariant | invalid | not-found | conflict | ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def error(code: str, diagnostics: str, *expression: str) -> Issue:
    """Shorthand for an issue of severity ``error``."""
    return Issue("error", code, diagnostics, tuple(expression))


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource holding ``issues`` (at least one, as R4 requires)."""
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [issue.to_fhir() for issue in issues]}


class FhirError(Exception):
    """An error answered with an HTTP status and an OperationOutcome.

    Subclasses fix ``status`` and the issue ``code``; raise them with a message and the FHIRPath expression(s) or
    parameter name(s) at fault, or pass ready ``issues`` (e.g. all the findings of the validator).
    """

    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        diagnostics: str = "",
        *expression: str,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        self.issues: list[Issue] = issues if issues is not None else [error(self.code, diagnostics, *expression)]
        self.headers: dict[str, str] = headers or {}
        super().__init__("; ".join(issue.diagnostics for issue in self.issues))


class Unauthorized(FhirError):
    """401: no bearer token, or one that does not verify (``WWW-Authenticate: Bearer error="invalid_token"``)."""

    status, code = 401, "login"

    def __init__(self, diagnostics: str, error_code: str = "invalid_token") -> None:
        challenge = f'Bearer error="{error_code}"' if error_code else "Bearer"
        super().__init__(diagnostics, headers={"WWW-Authenticate": challenge})


class Forbidden(FhirError):
    """403: a valid token whose scopes do not allow the interaction
    (``WWW-Authenticate: Bearer error="insufficient_scope"``)."""

    status, code = 403, "forbidden"

    def __init__(self, diagnostics: str, *expression: str) -> None:
        super().__init__(diagnostics, *expression, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


class BadRequest(FhirError):
    """400: the request cannot be understood (malformed JSON, bad parameter, mismatched id)."""

    status, code = 400, "invalid"


class NotFound(FhirError):
    """404: no such resource type, resource, version or route."""

    status, code = 404, "not-found"


class NotAcceptable(FhirError):
    """406: the client asked for a format we do not produce (XML)."""

    status, code = 406, "not-supported"


class Gone(FhirError):
    """410: the resource was deleted."""

    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    """412: If-Match (or a conditional interaction) did not hold."""

    status, code = 412, "conflict"


class TooCostly(FhirError):
    """400: a request the server refuses to carry out because of what it would cost (a search statement too large
    for the database, or one that ran past the ``search_timeout`` setting)."""

    status, code = 400, "too-costly"


class PayloadTooLarge(FhirError):
    """413: the request body is over the configured limit."""

    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    """415: the request body is in a format we do not read."""

    status, code = 415, "not-supported"


class Unprocessable(FhirError):
    """422: well-formed content that breaks a FHIR rule."""

    status, code = 422, "processing"


class NotSupported(FhirError):
    """501: a FHIR interaction the server does not offer."""

    status, code = 501, "not-supported"


class ServiceUnavailable(FhirError):
    """503: something the answer depends on (the database, the token issuer) cannot be reached right now."""

    status, code = 503, "transient"
