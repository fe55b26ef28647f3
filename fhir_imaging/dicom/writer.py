"""Write one assembled study (and its Patient, and Endpoint) through the FHIR REST API, merged with what the server
already holds, in one transaction. Used by ``importer`` (files) and ``dicomweb`` (a PACS).

Spec: https://hl7.org/fhir/R4/http.html#search (finding the study and patient by identifier),
https://hl7.org/fhir/R4/http.html#transaction, and ``bundle.py`` for the entries.

For each study: search ``ImagingStudy?identifier=urn:dicom:uid|urn:oid:…`` and ``Patient?identifier=…``, merge the
DICOM content into what was found (``study.py``), and write nothing when nothing changed; otherwise post one
transaction. A concurrent import of the same study makes the transaction fail (412) or find the study already created
(``200``): the study is merged and written again, up to ``ATTEMPTS`` times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from fhir_imaging.dicom.bundle import (
    StudyWrite,
    Write,
    order_search_url,
    read_transaction_response,
    search_url,
    study_resource,
    study_transaction,
)
from fhir_imaging.dicom.mapping import DICOM_UID_SYSTEM
from fhir_imaging.dicom.study import (
    StudyGroup,
    accession_number,
    changed,
    merge_patient,
    merge_study,
    with_order,
)

ATTEMPTS = 3


class WriteError(Exception):
    """The server refused or failed a request; the message says which and why (its OperationOutcome)."""


class ServerUnsupported(WriteError):
    """The server lacks an interaction the importer needs (search or transaction)."""


class Unavailable(WriteError):
    """The server is down or busy (no connection, a 5xx, 429): the same write may work later."""


class Retry(Exception):
    """A concurrent writer changed the study between our search and our transaction."""


@dataclass(slots=True)
class Tally:
    """What the writes did, for the summary."""

    studies_created: int = 0
    studies_updated: int = 0
    studies_unchanged: int = 0
    series_added: int = 0
    instances_added: int = 0
    patients_created: int = 0
    patients_updated: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (StudyInstanceUID, reason)


def study_identifier(uid: str) -> dict[str, str]:
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


UNAVAILABLE_STATUSES = frozenset({429})  # and every 5xx but 501 (not implemented: ServerUnsupported)


def check_available(response: httpx.Response, what: str) -> None:
    """``Unavailable`` when ``response`` says the server is down or busy."""
    status = response.status_code
    if status in UNAVAILABLE_STATUSES or (status >= 500 and status != 501):
        raise Unavailable(f"{what} failed: {explain(response)}")


def explain(response: httpx.Response) -> str:
    try:
        body = response.json()
        issues = body.get("issue", []) if isinstance(body, dict) else []
        text = "; ".join(str(issue.get("diagnostics") or issue.get("code")) for issue in issues)
    except ValueError:
        text = response.text[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


async def find_one(client: httpx.AsyncClient, resource_type: str, identifier: dict[str, Any]) -> dict[str, Any] | None:
    """The one ``resource_type`` with ``identifier``, or ``None``; ``WriteError`` when several have it."""
    url = search_url(resource_type, identifier)
    response = await client.get(url)
    if response.status_code in (404, 405, 501):
        raise ServerUnsupported(f"the FHIR server does not support search (GET {url}): {explain(response)}")
    check_available(response, f"GET {url}")
    if response.status_code != 200:
        raise WriteError(f"GET {url} failed: {explain(response)}")
    entries = response.json().get("entry", [])
    found = [
        entry["resource"]
        for entry in entries
        if entry.get("search", {}).get("mode", "match") == "match"
        and entry.get("resource", {}).get("resourceType") == resource_type
    ]
    if len(found) > 1:
        ids = ", ".join(str(resource.get("id")) for resource in found)
        raise WriteError(f"several {resource_type} resources ({ids}) have the identifier {identifier.get('value')}")
    return found[0] if found else None


def _version(resource: dict[str, Any] | None) -> str | None:
    return resource.get("meta", {}).get("versionId") if resource else None


def _series_and_instances(study: dict[str, Any] | None) -> tuple[set[str], set[str]]:
    series = (study or {}).get("series", [])
    return {s["uid"] for s in series}, {i["uid"] for s in series for i in s.get("instance", [])}


async def _post_transaction(client: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("", json=bundle)
    if response.status_code in (409, 412):
        raise Retry(explain(response))
    if response.status_code in (404, 405, 501):
        raise ServerUnsupported(f"the FHIR server does not support transactions (POST /): {explain(response)}")
    check_available(response, "the transaction")
    if response.status_code != 200:
        raise WriteError(f"the transaction failed: {explain(response)}")
    answer: dict[str, Any] = response.json()
    return answer


async def find_order(client: httpx.AsyncClient, study: dict[str, Any]) -> str | None:
    """``ServiceRequest/[id]`` of the one ServiceRequest whose identifier is the study's accession number, or
    ``None``: no accession number, no such order, several, or a server that does not let us search them (a 4xx).
    Found before the write, so that an order that is not there never fails the study's transaction."""
    accession = accession_number(study)
    if accession is None:
        return None
    url = order_search_url(accession)
    response = await client.get(url)
    check_available(response, f"GET {url}")
    if response.status_code != 200:
        return None
    found = [
        entry["resource"]
        for entry in response.json().get("entry", [])
        if entry.get("search", {}).get("mode", "match") == "match"
        and entry.get("resource", {}).get("resourceType") == "ServiceRequest"
        and entry["resource"].get("id")
    ]
    return f"ServiceRequest/{found[0]['id']}" if len(found) == 1 else None


@dataclass(frozen=True, slots=True)
class Before:
    """The server's ImagingStudy (or ``None``) as a write of a study found it: what writing the same study again
    in the same run, with more instances, merges into (``write_study``'s ``before``); and whether the study as
    written differs from the copy the write was merged into (``before``'s when given)."""

    study: dict[str, Any] | None
    changed: bool = True


async def _attempt(
    client: httpx.AsyncClient, group: StudyGroup, tally: Tally, endpoint: Write | None, before: Before | None
) -> Before:
    identifier = study_identifier(group.uid)
    existing = await find_one(client, "ImagingStudy", identifier)
    patient_identifier = group.patient["identifier"][0]
    found_patient = await find_one(client, "Patient", patient_identifier)
    patient = merge_patient(found_patient, group.patient)
    base = existing if before is None else before.study
    study = merge_study(base, with_order(group.study, await find_order(client, group.study)))
    patient_write = Write(patient, patient_identifier, _id(found_patient), _version(found_patient))
    patient_write.write = changed(found_patient, patient)
    plan = StudyWrite(Write(study, identifier, _id(existing), _version(existing)), patient_write, endpoint)
    plan.subject_from_patient = "subject" not in study
    written_study = study_resource(plan)
    plan.study.write = changed(existing, written_study)
    outcome = Before(existing, plan.study.write if before is None else changed(before.study, written_study))
    if not plan.study.write and not patient_write.write:
        tally.studies_unchanged += 1
        return outcome
    bundle = study_transaction(plan)
    response = await _post_transaction(client, bundle)
    result = read_transaction_response(bundle, response)
    study_result = result.entries.get("ImagingStudy")
    if existing is None and (study_result is None or study_result.status != 201):
        raise Retry("the study was created by someone else meanwhile")
    old_series, old_instances = _series_and_instances(existing)
    new_series, new_instances = _series_and_instances(written_study)
    tally.series_added += len(new_series - old_series)
    tally.instances_added += len(new_instances - old_instances)
    if existing is None:
        tally.studies_created += 1
    elif plan.study.write:
        tally.studies_updated += 1
    else:
        tally.studies_unchanged += 1
    if patient_write.write:
        if found_patient is None:
            tally.patients_created += 1
        else:
            tally.patients_updated += 1
    if endpoint is not None and endpoint.write and "Endpoint" in result.entries:
        endpoint.id = result.entries["Endpoint"].id or endpoint.id
        endpoint.write = False  # written: later studies only refer to it
    return outcome


def _id(resource: dict[str, Any] | None) -> str | None:
    return str(resource["id"]) if resource and "id" in resource else None


async def write_study(
    client: httpx.AsyncClient,
    group: StudyGroup,
    tally: Tally,
    endpoint: Write | None = None,
    raise_unavailable: bool = False,
    before: Before | None = None,
) -> Before | None:
    """Merge ``group`` into the server and write it (see the module doc); what the write found (``None`` when it
    failed). With ``before`` (what an earlier write of the same study in this run found), ``group`` is merged into
    that rather than into the server's copy, which the earlier write made: the study comes out as one write of the
    whole group would have made it. Failures are tallied, except a server that lacks search or transactions
    (``ServerUnsupported``), which stops everything, and, with ``raise_unavailable``, a server that is down or busy
    (``Unavailable``, a connection that fails included), for the caller to try again later."""
    for attempt in range(ATTEMPTS):
        try:
            try:
                return await _attempt(client, group, tally, endpoint, before)
            except httpx.TransportError as exc:
                if not raise_unavailable:
                    raise
                raise Unavailable(f"cannot reach the FHIR server ({type(exc).__name__}: {exc})") from None
        except Retry as retry:
            if attempt == ATTEMPTS - 1:
                tally.failed.append((group.uid, f"still changing under concurrent writes: {retry}"))
        except ServerUnsupported:
            raise
        except WriteError as exc:
            if raise_unavailable and isinstance(exc, Unavailable):
                raise
            tally.failed.append((group.uid, str(exc)))
            return None
    return None
