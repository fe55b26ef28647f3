"""Conditional interactions: finding the resources that search criteria name, inside a write's transaction
(https://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete, and conditional references in transactions).

Criteria are parsed strictly (an unknown parameter would widen the match: it is a 400). The search runs on the
transaction's own connection, after a lock on the criteria (PostgreSQL: an advisory lock; SQLite serialises writers
anyway), so two racing conditional creates with the same criteria make one resource.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl

from fhir_imaging.api.context import Context
from fhir_imaging.fhir.outcome import BadRequest, PreconditionFailed
from fhir_imaging.search.execute import run_search
from fhir_imaging.search.query import parse_search
from fhir_imaging.storage.base import Transaction, Version

CONTROL = ("_count", "_sort", "_summary", "_elements", "_include", "_revinclude", "_total", "_format", "_pretty")
MAX_CONDITIONAL_DELETE = 100


def criteria_items(criteria: str | list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of search criteria, without result-control parameters; empty criteria → 400."""
    items = parse_qsl(criteria.lstrip("?"), keep_blank_values=True) if isinstance(criteria, str) else list(criteria)
    items = [(name, value) for name, value in items if name not in CONTROL]
    if not items:
        raise BadRequest("Conditional interactions need search criteria", where)
    return items


def find(
    ctx: Context,
    tx: Transaction,
    resource_type: str,
    criteria: str | list[tuple[str, str]],
    bases: tuple[str, ...],
    limit: int = 2,
    where: str = "url",
) -> list[Version]:
    """The current versions (at most ``limit``) of the ``resource_type`` resources matching ``criteria``."""
    items = criteria_items(criteria, where)
    tx.lock(f"{resource_type}?{sorted(items)}")
    search = parse_search(
        ctx.registry,
        (resource_type,),
        items,
        strict=True,
        default_count=limit,
        max_count=limit,
        limits=ctx.search_limits,
    )
    search = dataclasses.replace(search, count=limit, total=None, summary=None, elements=None, includes=())
    result = run_search(ctx.store, search, bases)
    return [Version(hit.resource_type, hit.id, hit.version, hit.last_updated, "", hit.body) for hit in result.matches]


def find_one(
    ctx: Context,
    tx: Transaction,
    resource_type: str,
    criteria: str | list[tuple[str, str]],
    bases: tuple[str, ...],
    where: str = "url",
) -> Version | None:
    """The single match of ``criteria`` (None when there is none); several matches → 412."""
    matches = find(ctx, tx, resource_type, criteria, bases, 2, where)
    if len(matches) > 1:
        raise PreconditionFailed(f"The criteria {resource_type}?{_text(criteria)} match more than one resource", where)
    return matches[0] if matches else None


def _text(criteria: str | list[tuple[str, str]]) -> str:
    return criteria.lstrip("?") if isinstance(criteria, str) else "&".join(f"{k}={v}" for k, v in criteria)
