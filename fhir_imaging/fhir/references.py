"""Literal references inside a resource, with where they stand (https://hl7.org/fhir/R4/references.html).

Used by ``--enforce-references``: a reference to ``Type/id`` on this server must name a resource that exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

from fhir_imaging import linear_regex
from fhir_imaging.fhir.outcome import Issue
from fhir_imaging.fhir.resource import ID_PATTERN

# The pieces of a literal reference, [base/]Type/id[/_history/vid] (references.html#literal), for every pattern that
# reads one (here, validation/validator.py, search/fhirpath.py). A resource type as R4 spells its names; an id is the
# id datatype (fhir.resource.ID_PATTERN), and so is a version id.
RESOURCE_TYPE = r"[A-Z][A-Za-z]+"
ID = cast(str, ID_PATTERN.pattern)
TYPE_AND_ID = rf"(?P<type>{RESOURCE_TYPE})/(?P<id>{ID})"

# A relative literal reference, Type/id or Type/id/_history/vid, read exactly (no base: a caller that accepts this
# server's own base strips it first, as ``local_target`` does). Named groups ``type`` and ``id``.
RELATIVE_REFERENCE_PATTERN = rf"{TYPE_AND_ID}(?:/_history/{ID})?"
RELATIVE_REFERENCE = linear_regex.compile(RELATIVE_REFERENCE_PATTERN)


_SCHEME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def is_absolute(url: str) -> bool:
    """RFC 3986 §3.1: ``scheme ":" …`` with a scheme of a letter then letters, digits, ``+``, ``-`` or ``.``
    (``http://…``, ``urn:uuid:…``); what ``Bundle.entry.fullUrl`` must be (bundle.html#bundle-unique)."""
    scheme, colon, _ = url.partition(":")
    return bool(colon and scheme and scheme[0].isascii() and scheme[0].isalpha()) and set(scheme) <= _SCHEME_CHARACTERS


def literal_references(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(FHIRPath of the reference element, reference)`` for every ``reference`` string, contained resources aside."""
    stack: list[tuple[str, Any]] = [(resource.get("resourceType", "Resource"), resource)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            reference = node.get("reference")
            if isinstance(reference, str):
                yield f"{path}.reference", reference
            for key, child in node.items():
                if key != "contained" and isinstance(child, dict | list):
                    stack.append((f"{path}.{key}", child))
        elif isinstance(node, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(node) if isinstance(child, dict))


def local_target(reference: str, base: str) -> tuple[str, str] | None:
    """``(type, id)`` when the reference names a resource on this server (relative, or absolute under ``base``)."""
    if reference.startswith(base + "/"):
        reference = reference[len(base) + 1 :]
    match = RELATIVE_REFERENCE.fullmatch(reference)
    return (match["type"], match["id"]) if match else None


def dangling_references(
    resource: dict[str, Any], base: str, exists: Callable[[str, str], bool], is_resource_type: Callable[[str], bool]
) -> list[Issue]:
    """An error for each reference to this server that names no (live) resource."""
    issues = []
    for path, reference in literal_references(resource):
        target = local_target(reference, base)
        if target is None or not is_resource_type(target[0]):
            continue
        if not exists(*target):
            issues.append(Issue("error", "not-found", f"{path}: {reference} does not exist on this server", (path,)))
    return issues
