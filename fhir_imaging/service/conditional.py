"""Conditional interactions: finding the resources that search criteria name
(https://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete, and conditional references in transactions).

Criteria are parsed strictly (an unknown parameter would widen the match: it is a 400). Inside a write, the search
runs on the transaction itself after a lock on the criteria (``find(…, locking=tx)``: PostgreSQL takes an advisory lock;
SQLite serialises writers anyway), so two racing conditional creates with the same criteria make one resource.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl

from fhir_imaging.fhir.outcome import BadRequest, PreconditionFailed
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.fhir.resource import new_id
from fhir_imaging.search.execute import Hit, run_search
from fhir_imaging.search.query import SearchLimits, parse_search
from fhir_imaging.service.caller import Caller
from fhir_imaging.service.compartment import PatientCompartment
from fhir_imaging.service.granular import narrowing
from fhir_imaging.service.search import reached_for
from fhir_imaging.storage.base import Reader, Transaction, Version

Criteria = str | list[tuple[str, str]]  # a query string (``identifier=x&…``) or its (name, value) pairs
CONTROL = ("_count", "_sort", "_summary", "_elements", "_include", "_revinclude", "_total", "_format", "_pretty")
MAX_CONDITIONAL_DELETE = 100


def criteria_items(criteria: Criteria, where: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of search criteria, without result-control parameters; empty criteria → 400."""
    items = parse_qsl(criteria.lstrip("?"), keep_blank_values=True) if isinstance(criteria, str) else list(criteria)
    items = [(name, value) for name, value in items if name not in CONTROL]
    if not items:
        raise BadRequest("Conditional interactions need search criteria", where)
    return items


def criteria_text(criteria: Criteria) -> str:
    return criteria.lstrip("?") if isinstance(criteria, str) else "&".join(f"{k}={v}" for k, v in criteria)


@dataclasses.dataclass(frozen=True)
class Finder:
    """Runs conditional criteria with the server's registry and search bounds."""

    registry: Registry
    limits: SearchLimits
    compartment: PatientCompartment

    def find(
        self,
        reader: Reader,
        resource_type: str,
        criteria: Criteria,
        bases: tuple[str, ...],
        limit: int = 2,
        where: str = "url",
        locking: Transaction | None = None,
        *,
        caller: Caller,
    ) -> list[Hit]:
        """The current versions (at most ``limit``) of the ``resource_type`` resources matching ``criteria`` that
        ``caller`` may find: patient scopes keep the search in the patient's compartment, granular scopes to what
        their queries match, and the types the criteria's chains and ``_has`` reach must be searchable to it (and
        are narrowed the same way). Inside a write, ``locking`` (the reader's own transaction) first takes a lock
        on the criteria, held until the transaction ends."""
        items = criteria_items(criteria, where)
        if locking is not None:
            locking.lock(f"{resource_type}?{sorted(items)}")
        extra = narrowing(caller, "s", (resource_type,))
        within = caller.confined_to("s", resource_type)
        if within is not None:
            kept, more = self.compartment.search_filter(resource_type, within)
            items, extra = [*items, *more], (*extra, *((kept,) if kept is not None else ()))
        search = parse_search(
            self.registry,
            (resource_type,),
            items,
            strict=True,
            default_count=limit,
            max_count=limit,
            limits=self.limits,
            extra=extra,
        )
        filters = search.filters[: len(extra)] + reached_for(caller, search.filters[len(extra) :])
        search = dataclasses.replace(
            search, filters=filters, count=limit, total=None, summary=None, elements=None, includes=()
        )
        return run_search(reader, search, bases).matches

    def find_one(
        self,
        tx: Transaction,
        resource_type: str,
        criteria: Criteria,
        bases: tuple[str, ...],
        where: str = "url",
        *,
        caller: Caller,
    ) -> Hit | None:
        """The single match of ``criteria`` inside a write (None when there is none); several matches → 412."""
        matches = self.find(tx, resource_type, criteria, bases, 2, where, tx, caller=caller)
        return single(matches, resource_type, criteria, where)

    def update_target(
        self,
        tx: Transaction,
        resource_type: str,
        criteria: Criteria,
        body_id: str | None,
        bases: tuple[str, ...],
        where: str = "url",
        *,
        caller: Caller,
    ) -> tuple[str, bool]:
        """A conditional update's target (http.html#cond-update): the one match (the body's id, if any, must be
        its id), else the body's id or a new one; and whether there was a match. Several matches → 412."""
        match = self.find_one(tx, resource_type, criteria, bases, where, caller=caller)
        if match is None:
            return body_id or new_id(), False
        if body_id is not None and body_id != match.id:
            raise BadRequest(
                f"The resource id '{body_id}' is not the id of the resource the criteria match ('{match.id}')",
                f"{resource_type}.id",
            )
        return match.id, True

    def delete_targets(
        self,
        tx: Transaction,
        resource_type: str,
        criteria: Criteria,
        bases: tuple[str, ...],
        where: str = "url",
        *,
        caller: Caller,
    ) -> list[str]:
        """The ids a conditional delete deletes: every match, up to ``MAX_CONDITIONAL_DELETE`` (more → 412)."""
        matches = self.find(tx, resource_type, criteria, bases, MAX_CONDITIONAL_DELETE + 1, where, tx, caller=caller)
        if len(matches) > MAX_CONDITIONAL_DELETE:
            raise PreconditionFailed(
                f"The criteria match more than {MAX_CONDITIONAL_DELETE} resources: narrow them to delete", where
            )
        return [match.id for match in matches]


def single(matches: list[Hit], resource_type: str, criteria: Criteria, where: str = "url") -> Hit | None:
    """The one match of ``criteria`` (None when there is none); several → 412."""
    if len(matches) > 1:
        raise PreconditionFailed(
            f"The criteria {resource_type}?{criteria_text(criteria)} match more than one resource", where
        )
    return matches[0] if matches else None


def as_version(hit: Hit) -> Version:
    """A match as the stored version it is (a conditional create answers it like a write)."""
    return Version(hit.resource_type, hit.id, hit.version, hit.last_updated, "", hit.body)
