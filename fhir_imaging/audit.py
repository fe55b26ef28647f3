"""The audit trail: one R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html) per FHIR interaction, allowed or
refused. ``audit_event`` builds one from plain values (pure); ``audit_log.AuditLog`` appends them to a file.

What an event holds: who asked (the caller's name, its client id, its network address, the patient in its
context), what was asked (the interaction, the resource reference or the search as a relative URL, never a request
or response body), the answer's status code alone (never its diagnostics, which may quote data), when, and the
request id of the server's request log. The request id is an entity of its own, as IHE's Basic Audit Log Patterns
record ``X-Request-Id`` (https://profiles.ihe.net/ITI/BALP/): ``entity.what.identifier.value``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from fhir_imaging.fhir.resource import format_instant, new_id, now

DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
OBSERVER = "fhir-imaging"

PATIENT_RECORD = {"system": DCM, "code": "110110", "display": "Patient Record"}
QUERY = {"system": DCM, "code": "110112", "display": "Query"}
SEARCHES = frozenset({"search-type", "search-system"})

# The AuditEvent action of each interaction (C create, R read, U update, D delete, E execute: a search, a Bundle,
# an operation).
ACTIONS = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "search-type": "E",
    "search-system": "E",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}

_SYSTEM_OBJECT = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
_PERSON = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
_DOMAIN_RESOURCE = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
_PATIENT = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
_QUERY_ROLE = {"system": OBJECT_ROLE, "code": "24", "display": "Query"}
_REQUEST_ID = {"system": BALP_ENTITY_TYPE, "code": "XrequestId", "display": "X-Request-Id"}
_SOURCE = {
    "observer": {"display": OBSERVER},
    "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
}


def outcome_of(status: int | None) -> str:
    """0 success, 4 minor failure (a 4xx: the client's), 8 serious failure (a 5xx, or no answer at all)."""
    if status is None or status >= 500:
        return "8"
    return "4" if status >= 400 else "0"


def audit_event(
    interaction: str,
    status: int | None,
    who: str,
    *,
    client_id: str | None = None,
    address: str | None = None,
    patient: str | None = None,
    references: Sequence[str] = (),
    query: str | None = None,
    request_id: str | None = None,
    recorded: str | None = None,
) -> dict[str, Any]:
    """The AuditEvent of one interaction.

    ``interaction`` is a code of http://hl7.org/fhir/restful-interaction; ``status`` the HTTP status answered (None:
    no answer, the request was cancelled); ``who`` the caller's name ("anonymous", or "unknown" when no caller was
    identified); ``patient`` the id of the patient in the caller's context (an entity of its own unless
    ``references`` names it); ``references`` the resources acted on ("Type/id" or "Type/id/_history/n"); ``query``
    a search as a URL relative to the base ("ImagingStudy?a=b"),
    recorded base64-encoded as R4 specifies.
    """
    requestor: dict[str, Any] = {"who": {"identifier": {"value": who}}, "requestor": True}
    if client_id:
        requestor["altId"] = client_id
    if address:
        requestor["network"] = {"address": address, "type": "2"}  # 2: an IP address
    entities = [_resource_entity(reference) for reference in references]
    if query is not None:
        encoded = base64.b64encode(query.encode()).decode("ascii")
        entities.append({"type": _SYSTEM_OBJECT, "role": _QUERY_ROLE, "query": encoded})
    if patient and not any(reference.split("/_history/")[0] == f"Patient/{patient}" for reference in references):
        entities.append(_resource_entity(f"Patient/{patient}"))
    if request_id:
        entities.append({"what": {"identifier": {"value": request_id}}, "type": _REQUEST_ID})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": QUERY if interaction in SEARCHES else PATIENT_RECORD,
        "subtype": [{"system": INTERACTION, "code": interaction}],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": recorded or format_instant(now()),
        "outcome": outcome_of(status),
        "outcomeDesc": str(status) if status is not None else "no response: the request was cancelled",
        "agent": [requestor],
        "source": _SOURCE,
    }
    if entities:
        event["entity"] = entities
    return event


USER_AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
LOGIN = {"system": DCM, "code": "110122", "display": "Login"}


def token_event(
    status: int,
    client_id: str | None,
    *,
    error: str | None = None,
    scope: str | None = None,
    address: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The AuditEvent of one request to the built-in token endpoint (a backend client's login, DICOM "User
    Authentication"/"Login" as IHE BALP records them): the client, when its assertion was verified (else
    "unknown": a refused assertion's claims are not trusted), the scopes granted or the OAuth error, never the
    assertion or the token."""
    requestor: dict[str, Any] = {"who": {"identifier": {"value": client_id or "unknown"}}, "requestor": True}
    if client_id:
        requestor["altId"] = client_id
    if address:
        requestor["network"] = {"address": address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": USER_AUTHENTICATION,
        "subtype": [LOGIN],
        "action": "E",
        "recorded": format_instant(now()),
        "outcome": outcome_of(status),
        "outcomeDesc": f"{status} {error}" if error else (f"{status} scope: {scope}" if scope else str(status)),
        "agent": [requestor],
        "source": _SOURCE,
    }
    if request_id:
        event["entity"] = [{"what": {"identifier": {"value": request_id}}, "type": _REQUEST_ID}]
    return event


def _resource_entity(reference: str) -> dict[str, Any]:
    """A resource acted on: a Patient as the person the record is about, anything else as a domain resource."""
    if reference.startswith("Patient/"):
        return {"what": {"reference": reference}, "type": _PERSON, "role": _PATIENT}
    return {"what": {"reference": reference}, "type": _SYSTEM_OBJECT, "role": _DOMAIN_RESOURCE}
