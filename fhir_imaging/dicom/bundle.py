"""The transaction Bundle that writes one study with its Patient (and Endpoint), and how to read its answer. Pure.

Spec: https://hl7.org/fhir/R4/http.html#transaction (all or nothing), http.html#cond-update (``PUT
[type]?[search]``), http.html#ccreate (``ifNoneExist``), http.html#concurrency (``ifMatch``),
https://hl7.org/fhir/R4/bundle.html#references (``urn:uuid:`` fullUrls resolved in references) and
https://hl7.org/fhir/R4/search.html#escaping (token values).

What the importer found on the server decides each entry:

- Patient, Endpoint already there (found by identifier): ``PUT [type]/[id]`` with ``ifMatch`` on its version, only
  when the merge changed it. Not there yet: ``PUT [type]?identifier=…``, a conditional update that creates it (or
  updates the one a concurrent import has just made).
- ImagingStudy already there: ``PUT ImagingStudy/[id]`` with ``ifMatch``; a concurrent import makes it fail (412)
  and the importer merges again. Not there yet: ``POST ImagingStudy`` with ``ifNoneExist``; an answer of ``200``
  instead of ``201`` means a concurrent import created it first, and the importer merges again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

TRANSACTION_NAMESPACE = uuid.UUID("6f1e7a52-3a4b-5d7c-9e21-0c3b8f5a9d10")


@dataclass(slots=True)
class Write:
    """One resource of the transaction: its content, and its id and version when the server already has it."""

    resource: dict[str, Any]
    identifier: dict[str, Any]
    id: str | None = None
    version: str | None = None
    write: bool = True  # False: unchanged, only referenced

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    def reference(self) -> str:
        """How the other entries refer to it: ``Type/id`` when it exists, else its ``urn:uuid:`` fullUrl."""
        return f"{self.resource_type}/{self.id}" if self.id else self.full_url()

    def full_url(self) -> str:
        value = self.identifier.get("value", "")
        name = f"{self.resource_type}|{self.identifier.get('system', '')}|{value}"
        return f"urn:uuid:{uuid.uuid5(TRANSACTION_NAMESPACE, name)}"


@dataclass(slots=True)
class StudyWrite:
    """What a study's transaction writes: the ImagingStudy, its Patient and, from a PACS, the Endpoint."""

    study: Write
    patient: Write
    endpoint: Write | None = None
    subject_from_patient: bool = True  # False when the server's study already names its subject


@dataclass(slots=True)
class EntryResult:
    resource_type: str
    id: str | None
    status: int


@dataclass(slots=True)
class TransactionResult:
    """Per resource type, the written entry's result (only types that were written appear)."""

    entries: dict[str, EntryResult] = field(default_factory=dict)


def escape_token(value: str) -> str:
    """A token value escaped for a search parameter (``\\``, ``|``, ``,`` and ``$`` take a backslash)."""
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def identifier_query(identifier: dict[str, Any]) -> str:
    """``identifier=system|value`` (``|value`` without a system), escaped and percent-encoded."""
    system = escape_token(identifier["system"]) if identifier.get("system") else ""
    return "identifier=" + quote(f"{system}|{escape_token(identifier['value'])}", safe=":/.")


def search_url(resource_type: str, identifier: dict[str, Any]) -> str:
    """``Type?identifier=…`` — the search the importer runs and the conditional URL the Bundle carries."""
    return f"{resource_type}?{identifier_query(identifier)}"


def order_search_url(accession: dict[str, Any]) -> str:
    """``ServiceRequest?identifier=…`` for an accession number: ``system|value`` when it has a system (the issuer),
    else the value alone (any system); ``_count=2`` tells one match from several."""
    value = escape_token(accession["value"])
    token = f"{escape_token(accession['system'])}|{value}" if accession.get("system") else value
    return "ServiceRequest?identifier=" + quote(token, safe=":/.") + "&_count=2"


def _entry(write: Write, conditional: str) -> dict[str, Any]:
    """The entry for a Patient or Endpoint: update by id when known, else a conditional update (see the doc)."""
    if write.id:
        request = {"method": "PUT", "url": f"{write.resource_type}/{write.id}"}
        if write.version:
            request["ifMatch"] = f'W/"{write.version}"'
        return {"resource": {**write.resource, "id": write.id}, "request": request}
    resource = {key: value for key, value in write.resource.items() if key != "id"}
    return {"fullUrl": write.full_url(), "resource": resource, "request": {"method": "PUT", "url": conditional}}


def _study_entry(write: Write) -> dict[str, Any]:
    if write.id:
        return _entry(write, "")
    resource = {key: value for key, value in write.resource.items() if key != "id"}
    request = {"method": "POST", "url": "ImagingStudy", "ifNoneExist": identifier_query(write.identifier)}
    return {"fullUrl": write.full_url(), "resource": resource, "request": request}


def study_resource(plan: StudyWrite) -> dict[str, Any]:
    """The ImagingStudy as written: ``subject`` and ``endpoint`` pointing at the Patient and Endpoint (by id when
    the server has them, else by their ``urn:uuid:`` fullUrl); ``id`` when it is an update."""
    study = dict(plan.study.resource)
    if plan.subject_from_patient:
        study["subject"] = {"reference": plan.patient.reference()}
    if plan.endpoint is not None:
        reference = {"reference": plan.endpoint.reference()}
        study["endpoint"] = [*[ref for ref in study.get("endpoint", []) if ref != reference], reference]
    if plan.study.id:
        study["id"] = plan.study.id
    return study


def study_transaction(plan: StudyWrite) -> dict[str, Any]:
    """The transaction Bundle for ``plan``: the Endpoint, Patient and ImagingStudy entries of those to write."""
    entries: list[dict[str, Any]] = []
    for write in (plan.endpoint, plan.patient):
        if write is not None and write.write:
            entries.append(_entry(write, search_url(write.resource_type, write.identifier)))
    if plan.study.write:
        study = plan.study
        entries.append(_study_entry(Write(study_resource(plan), study.identifier, study.id, study.version)))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _status(text: str) -> int:
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return 0


def _location_id(location: str | None) -> tuple[str | None, str | None]:
    """``[base/]Type/id[/_history/v]`` → (type, id)."""
    if not location:
        return None, None
    parts = location.split("/_history/")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else (None, None)


def read_transaction_response(request: dict[str, Any], response: dict[str, Any]) -> TransactionResult:
    """The status and id of each written entry, from a transaction-response Bundle (entries in request order)."""
    result = TransactionResult()
    for sent, answered in zip(request.get("entry", []), response.get("entry", []), strict=False):
        resource_type = sent["resource"]["resourceType"]
        reply = answered.get("response", {})
        location_type, location_id = _location_id(reply.get("location"))
        resource = answered.get("resource") or {}
        entry_id = location_id if location_type == resource_type else resource.get("id")
        result.entries[resource_type] = EntryResult(resource_type, entry_id, _status(reply.get("status", "")))
    return result
