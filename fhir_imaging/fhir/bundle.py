"""Bundle builders: history and searchset (https://hl7.org/fhir/R4/bundle.html, http.html#history).

Stored resources are spliced into the Bundle as the bytes they are stored as (``orjson.Fragment``), never
re-serialised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from fhir_imaging.fhir.outcome import Issue, operation_outcome
from fhir_imaging.fhir.resource import format_instant, new_id, now


class StoredResource(Protocol):
    """What the searchset builder reads from a stored resource: any object with these attributes will do (a search
    hit is one). Read-only, so that frozen dataclasses and named tuples fit."""

    @property
    def resource_type(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def body(self) -> bytes | None: ...  # the stored JSON; None for a deletion


class StoredVersion(StoredResource, Protocol):
    """What the history builder reads from a stored version (``storage.base.Version`` is one)."""

    @property
    def version(self) -> int: ...

    @property
    def last_updated(self) -> str: ...  # the stored instant (meta.lastUpdated)

    @property
    def method(self) -> str: ...  # POST | PUT | DELETE: the interaction that made this version


HISTORY_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "200 OK"}


def _history_entry(base: str, version: StoredVersion) -> dict[str, Any]:
    url = f"{version.resource_type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if version.body is not None:
        entry["resource"] = orjson.Fragment(version.body)
    status = "201 Created" if version.method == "PUT" and version.version == 1 else HISTORY_STATUS[version.method]
    entry["request"] = {"method": version.method, "url": version.resource_type if version.method == "POST" else url}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version.version}"',
        "lastModified": version.last_updated,
    }
    return entry


def new_bundle(
    bundle_type: str, entries: list[dict[str, Any]], links: dict[str, str], total: int | None = None
) -> dict[str, Any]:
    """A Bundle of ``bundle_type``: a new id, ``meta.lastUpdated`` now, ``total`` when given, the links, and the
    entries when there are some."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(now())},
        "type": bundle_type,
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": relation, "url": url} for relation, url in links.items()]
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    base: str, versions: Iterable[StoredVersion], links: dict[str, str], total: int | None = None
) -> dict[str, Any]:
    """A Bundle of type ``history``, newest first as given."""
    return new_bundle("history", [_history_entry(base, version) for version in versions], links, total)


def searchset_bundle(
    base: str,
    matches: Iterable[StoredResource],
    links: dict[str, str],
    total: int | None = None,
    included: Iterable[StoredResource] = (),
    warnings: Iterable[Issue] = (),
) -> dict[str, Any]:
    """A Bundle of type ``searchset``: each match (``search.mode`` = match), then ``included`` (mode include), then
    an OperationOutcome of ``warnings`` (mode outcome) when there are some (search.html#errors)."""
    entries = [
        {
            "fullUrl": f"{base}/{version.resource_type}/{version.id}",
            "resource": orjson.Fragment(version.body or b"{}"),
            "search": {"mode": mode},
        }
        for versions, mode in ((matches, "match"), (included, "include"))
        for version in versions
    ]
    issues = list(warnings)
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    return new_bundle("searchset", entries, links, total)
