"""``--reconcile`` of ``sync-dicomweb`` and ``sync-dimse``: the studies that point at a PACS's Endpoint but that the
PACS no longer lists are marked, never deleted.

Spec: https://hl7.org/fhir/R4/valueset-imagingstudy-status.html (the status codes and their definitions),
https://hl7.org/fhir/R4/imagingstudy-definitions.html#ImagingStudy.endpoint (the services that give access to the
study), https://hl7.org/fhir/R4/http.html#concurrency (``If-Match``).

A study the PACS no longer has loses that PACS's Endpoint reference (the PACS gives no access to it any more; the
study's history keeps the version that had it). When no Endpoint is left and its status is ``available``, the
status becomes ``unknown``: the study existed and was available, and the bridge cannot tell whether it was purged
by retention rules, moved to another archive, withdrawn in error or cancelled (docs/dicom.md, *reconcile*, says why
neither ``entered-in-error`` nor ``cancelled``). A status someone set by hand (``cancelled``, ``entered-in-error``)
is left alone. A study that reappears is read again by the next sync (it no longer points at the Endpoint, so it is
not "up to date"), and the merge turns ``unknown`` back into ``available`` and adds the Endpoint again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fhir_imaging.dicom.mapping import DICOM_UID_SYSTEM
from fhir_imaging.dicom.study import without_meta
from fhir_imaging.dicom.writer import WriteError, explain

PAGE_SIZE = 500
MISSING_STATUS = "unknown"


@dataclass(slots=True)
class ReconcileResult:
    """What a reconcile did: studies no longer in the PACS (marked ``unknown``, or only unlinked because another
    Endpoint still serves them), and those changed by someone else meanwhile (left for the next run)."""

    marked: list[str] = field(default_factory=list)  # StudyInstanceUIDs
    unlinked: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"reconciled: {len(self.marked)} studies no longer in the PACS marked {MISSING_STATUS}, "
            f"{len(self.unlinked)} only unlinked from it (served by another Endpoint, or a status set by hand), "
            f"{len(self.conflicts)} changed meanwhile (next run)",
            *(f"no longer in the PACS: {uid}" for uid in self.marked + self.unlinked),
        ]


def study_uid(study: dict[str, Any]) -> str | None:
    """The StudyInstanceUID of an ImagingStudy (its ``urn:dicom:uid`` identifier)."""
    for identifier in study.get("identifier", []):
        value = identifier.get("value", "")
        if identifier.get("system") == DICOM_UID_SYSTEM and value.startswith("urn:oid:"):
            return str(value[len("urn:oid:") :])
    return None


def unlinked(study: dict[str, Any], endpoint_reference: str) -> dict[str, Any]:
    """The study (no ``meta``) without references to ``endpoint_reference``, its status ``unknown`` when it was
    ``available`` and no Endpoint is left."""
    result = without_meta(study)
    gone = {"reference": endpoint_reference}
    endpoints = [ref for ref in result.get("endpoint", []) if ref != gone]
    result.pop("endpoint", None)
    if endpoints:
        result["endpoint"] = endpoints
    series_list = []
    for series in result.get("series", []):
        series = dict(series)
        kept = [ref for ref in series.pop("endpoint", []) if ref != gone]
        if kept:
            series["endpoint"] = kept
        series_list.append(series)
    if series_list:
        result["series"] = series_list
    if not endpoints and result.get("status") == "available":
        result["status"] = MISSING_STATUS
    return result


def _next_url(bundle: dict[str, Any]) -> str | None:
    """The ``next`` link as a URL relative to the FHIR base (the server may name itself by another public URL)."""
    for link in bundle.get("link", []):
        if link.get("relation") == "next" and link.get("url"):
            parts = urlsplit(str(link["url"]))
            return f"ImagingStudy?{parts.query}"
    return None


async def studies_of(client: Any, endpoint_id: str) -> list[dict[str, Any]]:
    """Every ImagingStudy that points at ``Endpoint/{endpoint_id}`` (study or series level), page by page."""
    url: str | None = f"ImagingStudy?endpoint=Endpoint/{endpoint_id}&_count={PAGE_SIZE}"
    found: list[dict[str, Any]] = []
    while url is not None:
        response = await client.get(url)
        if response.status_code != 200:
            raise WriteError(f"GET {url} failed: {explain(response)}")
        bundle = response.json()
        found += [
            entry["resource"]
            for entry in bundle.get("entry", [])
            if entry.get("search", {}).get("mode", "match") == "match"
            and entry.get("resource", {}).get("resourceType") == "ImagingStudy"
        ]
        url = _next_url(bundle)
    return found


async def reconcile(client: Any, endpoint_id: str, present: set[str]) -> ReconcileResult:
    """Mark the studies of ``Endpoint/{endpoint_id}`` whose UID is not in ``present`` (the PACS's whole list)."""
    result = ReconcileResult()
    reference = f"Endpoint/{endpoint_id}"
    for study in await studies_of(client, endpoint_id):
        uid = study_uid(study)
        if uid is None or uid in present:
            continue
        changed = unlinked(study, reference)
        headers = {"If-Match": f'W/"{study.get("meta", {}).get("versionId", "")}"'}
        response = await client.put(f"ImagingStudy/{study['id']}", json=changed, headers=headers)
        if response.status_code in (409, 412):
            result.conflicts.append(uid)
        elif response.status_code not in (200, 201):
            raise WriteError(f"PUT ImagingStudy/{study['id']} failed: {explain(response)}")
        elif changed.get("status") == MISSING_STATUS and study.get("status") != MISSING_STATUS:
            result.marked.append(uid)
        else:
            result.unlinked.append(uid)
    return result
