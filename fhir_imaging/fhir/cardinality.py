"""How many values a search parameter's expression can give one resource, from the R4 StructureDefinitions (the
shipped ``validation/data/types.json``, derived from them by tools/derive_validation.py).

Search uses it to plan a ``ge``/``lt`` pair on a date parameter as one range of one index row (search/planner.py
``combine_ranges``): exact only when a resource has at most one row, and that row is a point in time (a date,
dateTime or instant: ``lo <= hi``), as ``ImagingStudy.started`` is. Only plain paths are understood
(``ImagingStudy.started``, ``Resource.meta.lastUpdated``); anything else — a union, ``as``, ``where()``, a choice
element, an element that repeats anywhere on the way — is taken to give many.
Spec: https://hl7.org/fhir/R4/elementdefinition.html (max), https://hl7.org/fhir/R4/searchparameter.html
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson

POINT_TYPES = frozenset({"date", "dateTime", "instant"})
ROOTS = ("Resource", "DomainResource")  # expressions on every resource name these instead of the type


@cache
def _types() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(
        resources.files("fhir_imaging").joinpath("validation", "data", "types.json").read_bytes()
    )
    return data


def _element(structure: str, owner: str, name: str) -> dict[str, Any] | None:
    """The element ``name`` of ``owner`` (a resource, one of its backbone elements, or a complex datatype)."""
    types = _types()
    if structure in types["resources"]:
        found = types["resources"][structure].get(owner, {}).get(name)
    else:
        found = types["complex"].get(structure, {}).get(structure, {}).get(name)
    return found if isinstance(found, dict) else None


@cache
def single_point(resource_type: str, expression: str | None) -> bool:
    """True when ``expression`` (for ``resource_type``) gives at most one value, a date, dateTime or instant."""
    if not expression:
        return False
    steps = expression.strip().split(".")
    if steps[0] not in (resource_type, *ROOTS) or len(steps) < 2:
        return False
    if not all(step.isidentifier() for step in steps[1:]):
        return False
    structure, owner = resource_type, resource_type
    kind = ""
    for step in steps[1:]:
        if kind:  # the previous step was a complex element: continue inside its type
            structure, owner = (structure, kind[1:]) if kind.startswith("@") else (kind, kind)
        element = _element(structure, owner, step)
        if element is None or element.get("max", "1") != "1" or len(element.get("types", ())) != 1:
            return False
        kind = element["types"][0]
    return kind in POINT_TYPES
