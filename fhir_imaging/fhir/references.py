"""Literal references inside a resource, with where they stand (https://hl7.org/fhir/R4/references.html).

Used by ``--enforce-references``: a reference to ``Type/id`` on this server must name a resource that exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fhir_imaging import linear_regex
from fhir_imaging.fhir.outcome import Issue

LOCAL_REFERENCE = linear_regex.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


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
    match = LOCAL_REFERENCE.fullmatch(reference)
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
