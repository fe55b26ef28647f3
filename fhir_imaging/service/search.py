"""search: one query parsed (search/query.py), run on a reader (search/execute.py) and answered as a ``searchset``
Bundle whose ``self`` link shows the search as performed and whose ``next`` / ``previous`` links carry a stateless
keyset cursor. https://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_imaging.config import Settings
from fhir_imaging.fhir.bundle import searchset_bundle
from fhir_imaging.fhir.outcome import Issue, NotFound
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.search.execute import Hit, run_search
from fhir_imaging.search.paging import CURSOR
from fhir_imaging.search.query import Chain, Compartment, Filter, Has, SearchLimits, SearchRequest, parse_search
from fhir_imaging.search.shape import shape
from fhir_imaging.service.caller import ANONYMOUS, Caller
from fhir_imaging.service.granular import narrow_reached
from fhir_imaging.storage.base import Reader


@dataclass(frozen=True)
class SearchSpec:
    """One search as asked: where (``path`` relative to the base: ``ImagingStudy``, ``Patient/1/ImagingStudy``, ''
    for the whole system), over which types, with which (name, value) parameters."""

    path: str
    types: tuple[str, ...]
    items: list[tuple[str, str]]
    strict: bool = False  # Prefer: handling=strict (unknown parameters are a 400)
    extra: tuple[Filter, ...] = ()  # filters the path adds (a compartment)


def compartment_spec(
    registry: Registry, patient_id: str, resource_type: str, items: list[tuple[str, str]], strict: bool
) -> SearchSpec:
    """``GET /Patient/[id]/[type]``: ``[type]?patient=Patient/[id]`` through every parameter of the Patient
    CompartmentDefinition for that type (whether or not the Patient exists), plus any other parameters."""
    searchable = {param.code for param in registry.searchable_params(resource_type)}
    codes = tuple(code for code in registry.patient_compartment.get(resource_type, ()) if code in searchable)
    if not codes:
        raise NotFound(f"{resource_type} is not in the Patient compartment", resource_type)
    path = f"Patient/{patient_id}/{resource_type}"
    return SearchSpec(path, (resource_type,), items, strict, (Compartment(codes, patient_id),))


def searchset(
    reader: Reader,
    registry: Registry,
    settings: Settings,
    limits: SearchLimits,
    spec: SearchSpec,
    base: str,
    bases: tuple[str, ...],
    caller: Caller = ANONYMOUS,
    keep: Callable[[list[Hit]], list[Hit]] = lambda hits: hits,
) -> dict[str, Any]:
    """Parse, run and answer one search as a ``searchset`` Bundle for ``caller``: the types its chains and ``_has``
    reach must be searchable to it (403 otherwise), and are kept to what its granular scopes allow of them;
    included resources are only those ``keep`` keeps."""
    search = parse_search(
        registry,
        spec.types,
        spec.items,
        strict=spec.strict,
        default_count=settings.default_count,
        max_count=settings.max_count,
        extra=spec.extra,
        limits=limits,
    )
    given = len(spec.extra)  # the filters the path and the scopes add come first, the client's follow
    search = dataclasses.replace(search, filters=search.filters[:given] + reached_for(caller, search.filters[given:]))
    result = run_search(reader, search, bases, max_include=settings.max_include)
    url = f"{base}/{spec.path}" if spec.path else base
    performed = list(search.performed)
    if not spec.path and any(name == "_type" for name, _ in spec.items):  # a system search keeps to its types
        performed.insert(0, ("_type", ",".join(spec.types)))

    def link(cursor: str | None) -> str:
        pairs = performed + ([(CURSOR, cursor)] if cursor else [])
        return f"{url}?{urlencode(pairs)}" if pairs else url

    links = {"self": link(search.cursor)}
    if search.cursor:
        links["first"] = link(None)
    if result.previous_cursor:
        links["previous"] = link(result.previous_cursor)
    if result.next_cursor:
        links["next"] = link(result.next_cursor)
    total = None if search.total == "none" else result.total
    return searchset_bundle(
        base,
        [_shaped(hit, search) for hit in result.matches],
        links,
        total,
        [_shaped(hit, search) for hit in keep(result.included)],
        _include_warning(search, settings.max_include) if result.included_capped else (),
    )


def reached_for(caller: Caller, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """A client's filters as ``caller`` may run them: the types their chains and ``_has`` reach must be searchable
    to it (403 otherwise), and are kept to what its granular scopes allow of them (service/granular.py)."""
    for filter_ in filters:
        for resource_type, name in _reached(filter_):
            caller.authorize("s", resource_type, name)
    return tuple(narrow_reached(filter_, caller) for filter_ in filters)


def _reached(filter_: Filter) -> Iterator[tuple[str, str]]:
    """(type, parameter) for every resource type a filter's chains and ``_has`` search through."""
    if isinstance(filter_, Chain):
        for target in filter_.target_types:
            yield target, filter_.code
        yield from _reached(filter_.inner)
    elif isinstance(filter_, Has):
        yield filter_.source, f"_has:{filter_.source}"
        yield from _reached(filter_.inner)


def _shaped(hit: Hit, search: SearchRequest) -> Hit:
    """The hit as ``_summary`` / ``_elements`` ask to show it."""
    if search.summary or search.elements is not None:
        shaped = shape(orjson.loads(hit.body), search.summary, search.elements)
        if shaped is not None:
            return dataclasses.replace(hit, body=orjson.dumps(shaped))
    return hit


def _include_warning(search: SearchRequest, most: int) -> list[Issue]:
    names = sorted({"_revinclude" if include.reverse else "_include" for include in search.includes})
    message = (
        f"{' and '.join(names)} found more than {most} resources for this page: only {most} are included "
        "(ask for smaller pages with _count to get them all)"
    )
    return [Issue("warning", "too-costly", message, tuple(names))]
