"""Granular SMART v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html, "Finer-grained
resource constraints using search parameters"): ``user/ImagingStudy.rs?modality=CT`` allows read and search of the
ImagingStudy resources that match ``modality=CT``, and of no other. Several grants covering one interaction on one
type combine with OR; a grant without a query covering it lifts the restriction (auth/scopes.py ``Access.queries``).

How each interaction honours them (the search engine is the judge of "matches" everywhere: the same parser, planner
and index as any search, on the reader or transaction of the interaction):

- search (s): the search gets one more filter, the grants' criteria OR-ed (``narrowing``: an ``AnyOf`` filter,
  compiled to ``(…) OR (…)`` in SQL), so paging and totals stay right. It applies to type, compartment and system
  searches, and to the criteria of conditional interactions (service/conditional.py). The types that chains and
  ``_has`` reach are narrowed by their own s grants (``narrow_reached``), and the resources ``_include`` /
  ``_revinclude`` add must match the r grants of their type (``granted_hits``).
- read, vread, history of one resource (r): a resource whose current version does not match is answered as if it
  did not exist (404), as patient context does. Past versions are not indexed: a resource whose current version
  matches shows its whole history. The history of a type or of the system is refused (403).
- writes (c, u, d): the current version an update, patch or delete replaces must match, and so must the version a
  create, update or patch writes: it is checked in the write's transaction once its row and index rows are written,
  and a mismatch (403) rolls the transaction back (``check_granted``).

A grant's query is parsed with the search parser for each type it is used on, strictly and within the search
bounds (``SearchLimits``), and once per (query, type): ``GrantQueries`` keeps them in a bounded cache. A query that
does not parse for a type (an unknown parameter, a bad value), or that holds anything but criteria (``_count``,
``_include``…), grants nothing for that type: tokens may carry scopes meant for other servers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from urllib.parse import parse_qsl

from fhir_imaging.fhir.outcome import FhirError, Forbidden
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.search.execute import Hit, Queryable, matching
from fhir_imaging.search.query import Alternative, AnyOf, Chain, Filter, Has, SearchLimits, parse_search
from fhir_imaging.service.caller import Caller, Groups

CACHED_QUERIES = 1024  # (query, type) pairs whose parse is kept
NAMES_ING = {"c": "creating", "r": "reading", "u": "updating", "d": "deleting", "s": "searching"}


class GrantQueries:
    """Reads granular grants' queries for a resource type, each once (thread-safe: ``functools.lru_cache``)."""

    def __init__(self, registry: Registry, limits: SearchLimits, cached: int = CACHED_QUERIES) -> None:
        self.registry = registry
        self.limits = limits
        self._parsed = functools.lru_cache(maxsize=cached)(self._parse)

    def groups(self, queries: tuple[str, ...], resource_type: str) -> Groups:
        """The filters of each of ``queries`` that parses for ``resource_type``, each group once. The groups
        together hold at most ``limits.parameters`` filters (one search's worth): further ones are left out,
        which narrows what the grants allow, never widens it."""
        found: dict[tuple[Filter, ...], None] = {}
        size = 0
        for query in queries:
            filters = self._parsed(query, resource_type)
            if filters is None:
                continue
            size += len(filters)
            if size > self.limits.parameters:
                break
            found[filters] = None
        return tuple(found)

    def _parse(self, query: str, resource_type: str) -> tuple[Filter, ...] | None:
        """The filters of one grant query, or None when it is not criteria this server reads for the type."""
        if not self.registry.is_resource_type(resource_type):
            return None
        try:
            items = parse_qsl(query, keep_blank_values=True, max_num_fields=self.limits.parameters)
            search = parse_search(self.registry, (resource_type,), items, strict=True, limits=self.limits)
        except (FhirError, ValueError):
            return None
        if not items or len(search.filters) != len(items):  # a result-control parameter, or an empty value
            return None
        return search.filters


# -- searches --------------------------------------------------------------------------------------------------------


def alternatives(granted: dict[str, Groups | None], inner: tuple[Filter, ...] = ()) -> tuple[Alternative, ...]:
    """``inner`` AND-ed with what is granted of each type (None: all of it), one alternative per distinct group of
    filters (the types sharing it together: a ``*`` grant reads the same for many types)."""
    by_filters: dict[tuple[Filter, ...], list[str]] = {}
    for resource_type, groups in granted.items():
        for group in ((),) if groups is None else groups:
            by_filters.setdefault((*inner, *group), []).append(resource_type)
    return tuple(Alternative(tuple(types), filters) for filters, types in by_filters.items())


def narrowing_of(granted: dict[str, Groups | None]) -> tuple[Filter, ...]:
    """The filters that keep a search over the types of ``granted`` to what is granted of each: none when nothing
    is narrowed, the grant's own filters for one type and one grant, else one ``AnyOf``."""
    if all(groups is None for groups in granted.values()):
        return ()
    if len(granted) == 1:
        (groups,) = granted.values()
        if groups is not None and len(groups) == 1:
            return groups[0]
    return (AnyOf(alternatives(granted)),)


def narrowing(caller: Caller, interaction: str, types: Sequence[str]) -> tuple[Filter, ...]:
    """The filters that keep a search of ``types`` to what the caller's ``interaction`` grants allow."""
    return narrowing_of({resource_type: caller.granted(interaction, resource_type) for resource_type in types})


def narrow_reached(item: Filter, caller: Caller) -> Filter:
    """A search's chain or ``_has``, the resources it reaches kept to what the caller's s grants allow of them."""
    if isinstance(item, Chain):
        inner = narrow_reached(item.inner, caller)
        granted = {target: caller.granted("s", target) for target in item.target_types}
        if any(groups is not None for groups in granted.values()):
            inner = AnyOf(alternatives(granted, (inner,)))
        return item if inner is item.inner else dataclasses.replace(item, inner=inner)
    if isinstance(item, Has):
        inner = narrow_reached(item.inner, caller)
        groups = caller.granted("s", item.source)
        if groups is not None:
            inner = AnyOf(alternatives({item.source: groups}, (inner,)))
        return item if inner is item.inner else dataclasses.replace(item, inner=inner)
    return item


# -- single resources ------------------------------------------------------------------------------------------------


def granted_hits(
    reader: Queryable, caller: Caller, interaction: str, hits: list[Hit], bases: tuple[str, ...]
) -> list[Hit]:
    """The hits whose resources the caller's ``interaction`` grants allow (one statement per narrowed type)."""
    narrowed = {hit.resource_type for hit in hits if caller.granted(interaction, hit.resource_type) is not None}
    if not narrowed:
        return hits
    kept: set[tuple[str, str]] = set()
    for resource_type in narrowed:
        ids = [hit.id for hit in hits if hit.resource_type == resource_type]
        filters = narrowing(caller, interaction, (resource_type,))
        kept.update((resource_type, hit.id) for hit in matching(reader, resource_type, filters, ids, bases))
    return [hit for hit in hits if hit.resource_type not in narrowed or (hit.resource_type, hit.id) in kept]


def granted_current(
    reader: Queryable, groups: Groups, resource_type: str, resource_id: str, bases: tuple[str, ...]
) -> Hit | None:
    """The current version of a resource if it matches ``groups`` (None: it does not, or is deleted, or never
    existed): one statement, so the version answered is the version that matched."""
    found = matching(reader, resource_type, narrowing_of({resource_type: groups}), [resource_id], bases)
    return found[0] if found else None


def check_granted(
    reader: Queryable,
    caller: Caller,
    interaction: str,
    resource_type: str,
    ids: Sequence[str],
    bases: tuple[str, ...],
) -> None:
    """Forbidden unless the current versions of ``ids`` all match the caller's ``interaction`` grants. Inside a
    write, after the write, it judges what was just written (its index rows are in the same transaction)."""
    groups = caller.granted(interaction, resource_type)
    if groups is None or not ids:
        return
    found = {hit.id for hit in matching(reader, resource_type, narrowing_of({resource_type: groups}), ids, bases)}
    refused = [resource_id for resource_id in ids if resource_id not in found]
    if refused:
        raise Forbidden(
            f"The access token's scopes allow {NAMES_ING[interaction]} {resource_type} resources that match their "
            f"search criteria only: {resource_type}/{refused[0]} does not",
            resource_type,
        )
