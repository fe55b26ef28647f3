"""Rules on a Bundle's entries that its definition states in prose (the bdl-* invariants are evaluated elsewhere).

Spec: https://hl7.org/fhir/R4/bundle.html#bundle-unique (``Bundle.entry.fullUrl``: "the Absolute URL for the
resource … The fullUrl SHALL NOT disagree with the id in the resource"), https://hl7.org/fhir/R4/bundle.html#references
(resolving references in Bundles) and https://hl7.org/fhir/R4/documents.html (a document is self-contained).

- ``fullUrl`` is absolute: a scheme (``http:``, ``urn:``…) and then the rest; an error otherwise.
- A RESTful ``fullUrl`` (``…/Patient/123``) names the entry's resource type and id; a disagreement is only a warning,
  as HL7's own examples (Bundle-lri-example, two message Bundles) carry such fullUrls.
- In a document, every literal reference of its resources resolves to an entry: an error for relative references
  and ``urn:uuid:``/``urn:oid:`` ones, a warning for absolute URLs (which may name a resource on another server).

Transaction and batch input is checked when it is read (fhir/transaction.py: absolute fullUrls; service/bundle.py: a
placeholder no entry names is a 400).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.fhir.references import is_absolute

PLACEHOLDERS = ("urn:uuid:", "urn:oid:")


def _restful(url: str) -> tuple[str, str, str] | None:
    """``base/Type/id`` (an optional ``/_history/n`` aside) → (base, Type, id) when Type looks like a resource type."""
    parts = url.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 3 or not parts[-2][:1].isupper() or not parts[-2].isalpha():
        return None
    return "/".join(parts[:-2]), parts[-2], parts[-1]


def _references(value: Any) -> Iterator[str]:
    """Every ``reference`` string in ``value``, contained resources aside (they resolve inside their resource)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, child in node.items():
                if key == "reference" and type(child) is str:
                    yield child
                elif key != "contained" and (type(child) is dict or type(child) is list):
                    stack.append(child)
        elif type(node) is list:
            stack.extend(child for child in node if type(child) is dict or type(child) is list)


def bundle_issues(bundle: dict[str, Any], path: str) -> list[Issue]:
    """The issues of a Bundle's entries (see the module's docstring); [] for a sound one."""
    entries = bundle.get("entry")
    if type(entries) is not list:
        return []
    issues: list[Issue] = []
    full_urls: set[str] = set()
    keys: set[str] = set()  # "Type/id" of the entries' resources and RESTful fullUrls
    for number, entry in enumerate(entries):
        if type(entry) is not dict:
            continue
        where = f"{path}.entry[{number}]"
        full_url, resource = entry.get("fullUrl"), entry.get("resource")
        if type(resource) is dict and type(resource.get("id")) is str:
            keys.add(f"{resource.get('resourceType')}/{resource['id']}")
        if type(full_url) is not str or not full_url:
            continue
        full_urls.add(full_url)
        named = _restful(full_url)
        if named is not None:
            keys.add(f"{named[1]}/{named[2]}")
        if not is_absolute(full_url):
            message = f"{where}.fullUrl: {full_url[:80]!r} is not an absolute URL (nor urn:uuid: / urn:oid:)"
            issues.append(Issue("error", "invalid", message, (f"{where}.fullUrl",)))
            continue
        restful = _restful(full_url) if not full_url.startswith(PLACEHOLDERS) else None
        if restful is not None and type(resource) is dict:
            _, type_name, resource_id = restful
            own_id = resource.get("id")
            if type_name != resource.get("resourceType") or (type(own_id) is str and own_id != resource_id):
                message = f"{where}.fullUrl: {full_url[:80]!r} does not name this {resource.get('resourceType')}"
                message += f" with id {own_id!r}" if type(own_id) is str else ""
                issues.append(Issue("warning", "invalid", message, (f"{where}.fullUrl",)))
    if bundle.get("type") == "document":
        issues += _unresolved(entries, path, full_urls, keys)
    return issues


def _unresolved(entries: list[Any], path: str, full_urls: set[str], keys: set[str]) -> list[Issue]:
    issues: list[Issue] = []
    for number, entry in enumerate(entries):
        if type(entry) is not dict or type(entry.get("resource")) is not dict:
            continue
        full_url = entry.get("fullUrl")
        restful = _restful(full_url) if type(full_url) is str else None
        for reference in _references(entry["resource"]):
            if reference.startswith("#") or reference in full_urls:
                continue
            absolute = is_absolute(reference)
            if not absolute and (
                reference in keys or (restful is not None and f"{restful[0]}/{reference}" in full_urls)
            ):
                continue
            where = f"{path}.entry[{number}].resource"
            severity = "warning" if absolute and not reference.startswith(PLACEHOLDERS) else "error"
            message = f"{where}: the reference {reference[:80]!r} does not resolve within the document"
            issues.append(Issue(severity, "not-found", message, (where,)))
    return issues
