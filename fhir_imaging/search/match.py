"""An independent in-Python evaluator of a typed search over resources as dicts: the test oracle for the SQL side.

It shares the query parser and the extraction of values (search/index.py ``extract_values``) with the server, but
none of the SQL compilation: every comparison below is written again from the spec's words.
Spec: https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_imaging.fhir.registry import Registry
from fhir_imaging.search.composite import CompositeValue, Elements, element_extractor
from fhir_imaging.search.index import extract_values
from fhir_imaging.search.query import AnyOf, Chain, Clause, Compartment, Filter, Has, SearchRequest, SortKey
from fhir_imaging.search.types.base import normalize
from fhir_imaging.search.types.date import DateValue
from fhir_imaging.search.types.number import NumberValue
from fhir_imaging.search.types.quantity import QuantityValue
from fhir_imaging.search.types.reference import ReferenceValue
from fhir_imaging.search.types.string import StringValue
from fhir_imaging.search.types.token import OfTypeValue, TextValue, TokenValue


@dataclass
class Corpus:
    """The resources searched, in insertion (rid) order."""

    registry: Registry
    resources: Sequence[dict[str, Any]]
    bases: tuple[str, ...] = ("",)

    def rows(self, resource: dict[str, Any], key: str) -> list[tuple[Any, ...]]:
        code, _, sub = key.partition(":")
        param = self.registry.params_for(resource["resourceType"]).get(code)
        if param is None or param.expression is None:
            return []
        return [columns for _, row_sub, columns in extract_values(resource, param) if row_sub == sub]

    def elements(self, resource: dict[str, Any], code: str) -> Elements:
        """A composite's elements: per element, per component, the value columns of its rows."""
        param = self.registry.params_for(resource["resourceType"]).get(code)
        if param is None or not param.searchable or param.type != "composite":
            return []
        return element_extractor(param)(resource)

    def find(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        for resource in self.resources:
            if resource["resourceType"] == resource_type and resource.get("id") == resource_id:
                return resource
        return None


# -- one value against one row, per type -------------------------------------------------------------------------


def _token(value: Any, row: tuple[Any, ...]) -> bool:
    system: str
    code: str
    text: str | None
    system, code, text = row
    if isinstance(value, TextValue):
        return text is not None and text.startswith(value.text)
    if isinstance(value, OfTypeValue):
        return system == f"{value.type_system}|{value.type_code}" and code == value.value
    return bool((value.code is None or code == value.code) and (value.system is None or system == value.system))


def _string(value: StringValue, row: tuple[Any, ...], modifier: str | None) -> bool:
    exact = row[1]
    if modifier == "exact":
        return bool(exact == value.text)
    if modifier == "contains":
        return value.norm in normalize(exact)
    return normalize(exact).startswith(value.norm)


def _uri(value: str, row: tuple[Any, ...], modifier: str | None) -> bool:
    if modifier == "below":
        return bool(row[0].startswith(value))
    if modifier == "above":
        return value.startswith(str(row[0]))
    return bool(row[0] == value)


def _date(value: DateValue, row: tuple[Any, ...]) -> bool:
    lo: int
    hi: int
    lo, hi = row
    inside = value.lo <= lo and hi <= value.hi
    if value.prefix == "eq":
        return inside
    if value.prefix == "ne":
        return not inside
    if value.prefix == "gt":
        return hi > value.hi
    if value.prefix == "lt":
        return lo < value.lo
    if value.prefix == "ge":
        return hi > value.hi or inside
    if value.prefix == "le":
        return lo < value.lo or inside
    if value.prefix == "sa":
        return lo > value.hi
    if value.prefix == "eb":
        return hi < value.lo
    return lo <= value.hi and hi >= value.lo  # ap: overlap with the widened interval


def _number(value: NumberValue, lo: float, hi: float) -> bool:
    inside = value.lo <= lo and hi < value.hi
    return {
        "eq": inside,
        "ne": not inside,
        "gt": hi > value.value,
        "lt": lo < value.value,
        "ge": hi >= value.value,
        "le": lo <= value.value,
        "sa": lo > value.value,
        "eb": hi < value.value,
        "ap": lo < value.hi and hi >= value.lo,
    }[value.prefix]


def _quantity(value: QuantityValue, row: tuple[Any, ...]) -> bool:
    system, code, unit, lo, hi = row
    if not _number(value.number, lo, hi):
        return False
    if value.system is not None and system != value.system:
        return False
    if value.code is not None:
        return code == value.code if value.system is not None else value.code in (code, unit)
    return True


def _reference(value: ReferenceValue, row: tuple[Any, ...], bases: tuple[str, ...]) -> bool:
    target_type, target_id, base, url = row
    if value.id is None or (value.base is not None and value.base not in bases):
        return bool(url == value.url)
    return target_id == value.id and (not value.types or target_type in value.types) and base in bases


def value_matches(clause: Clause, value: Any, row: tuple[Any, ...], bases: tuple[str, ...]) -> bool:
    kind = "token" if clause.key.endswith(":identifier") else clause.kind
    return typed_matches(kind, clause.modifier, value, row, bases)


def typed_matches(kind: str, modifier: str | None, value: Any, row: tuple[Any, ...], bases: tuple[str, ...]) -> bool:
    if kind == "token":
        return _token(value, row)
    if kind == "string":
        return _string(value, row, modifier)
    if kind == "uri":
        return _uri(value, row, modifier)
    if kind == "date":
        return _date(value, row)
    if kind == "number":
        return _number(value, row[0], row[1])
    if kind == "quantity":
        return _quantity(value, row)
    return _reference(value, row, bases)


def _composite(value: CompositeValue, element: tuple[list[tuple[Any, ...]], ...], bases: tuple[str, ...]) -> bool:
    """Every component of ``value`` matches a value of the same element's component (search.html#composite)."""
    return all(
        any(typed_matches(kind, None, part, row, bases) for row in rows)
        for kind, part, rows in zip(value.kinds, value.parts, element, strict=True)
    )


# -- filters -----------------------------------------------------------------------------------------------------


def _local_targets(corpus: Corpus, resource: dict[str, Any], code: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in corpus.rows(resource, code) if row[0] is not None and row[2] in corpus.bases]


def matches(corpus: Corpus, resource: dict[str, Any], item: Filter) -> bool:
    if isinstance(item, Clause):
        if item.code == "_id" and item.missing is None and item.modifier in (None, "not"):
            found = any(isinstance(v, TokenValue) and v.code == resource.get("id") for v in item.values)
            return not found if item.modifier == "not" else found
        if item.kind == "composite":
            elements = corpus.elements(resource, item.key)
            if item.missing is not None:
                return (not elements) == item.missing
            return any(_composite(value, element, corpus.bases) for value in item.values for element in elements)
        rows = corpus.rows(resource, item.key)
        if item.missing is not None:
            return (not rows) == item.missing
        found = any(value_matches(item, value, row, corpus.bases) for value in item.values for row in rows)
        return not found if item.modifier == "not" else found
    if isinstance(item, Chain):
        for target_type, target_id in _local_targets(corpus, resource, item.code):
            target = corpus.find(target_type, target_id)
            if target is not None and target_type in item.target_types and matches(corpus, target, item.inner):
                return True
        return False
    if isinstance(item, Has):
        me = (resource["resourceType"], resource.get("id"))
        return any(
            source["resourceType"] == item.source
            and me in _local_targets(corpus, source, item.code)
            and matches(corpus, source, item.inner)
            for source in corpus.resources
        )
    if isinstance(item, AnyOf):
        return any(
            resource["resourceType"] in branch.types and all(matches(corpus, resource, f) for f in branch.filters)
            for branch in item.alternatives
        )
    assert isinstance(item, Compartment)
    return any(
        target == ("Patient", item.patient_id)
        for code in item.codes
        for target in _local_targets(corpus, resource, code)
    )


def _sort_value(corpus: Corpus, resource: dict[str, Any], key: SortKey) -> tuple[int, Any]:
    """(0, value) for a value, (1, None) when missing (missing sorts last both ways)."""
    if key.kind == "_id":
        return (0, resource.get("id"))
    if key.kind == "_lastUpdated":
        return (0, (resource.get("meta") or {}).get("lastUpdated"))
    rows = corpus.rows(resource, key.code)
    pick: Callable[[tuple[Any, ...]], Any] = {
        "date": lambda row: row[1] if key.descending else row[0],
        "number": lambda row: row[1] if key.descending else row[0],
        "quantity": lambda row: row[4] if key.descending else row[3],
        "string": lambda row: row[0],
        "token": lambda row: row[1],
        "uri": lambda row: row[0],
        "reference": lambda row: row[3],
    }[key.kind]
    values = [pick(row) for row in rows if pick(row) is not None]
    if not values:
        return (1, None)
    return (0, max(values) if key.descending else min(values))


def search(corpus: Corpus, request: SearchRequest) -> list[dict[str, Any]]:
    """Every match of ``request`` in ``corpus``, in the order the server must return them (sort keys, then rid)."""
    found = [
        (position, resource)
        for position, resource in enumerate(corpus.resources)
        if resource["resourceType"] in request.types and all(matches(corpus, resource, f) for f in request.filters)
    ]
    for key in reversed(request.sort):
        present = [item for item in found if _sort_value(corpus, item[1], key)[0] == 0]
        missing = [item for item in found if _sort_value(corpus, item[1], key)[0] == 1]
        present.sort(key=lambda item: _sort_value(corpus, item[1], key)[1], reverse=key.descending)
        found = present + missing
    return [resource for _, resource in found]
