"""``FhirService``: every interaction of the server, over plain values (resources, criteria, a parsed query, the
caller), built once from the settings, the registry, the store and the validator.

Each operation is blocking (database work, validation, patching): the HTTP layer runs it in a worker thread. A
read-only operation runs over one ``Store.reading`` unit, a write over one ``Store.transact`` unit; inside a unit
every read, search and write goes through its explicit ``Reader`` / ``Transaction``. Reads, vreads, histories and
searches may be served by a read replica (``reading(…, replica=True)``); the reads a write depends on (a patch's
target) are not.

Spec: https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from fhir_imaging.config import Settings
from fhir_imaging.fhir.bundle import StoredResource
from fhir_imaging.fhir.fhirpath_budget import FhirPathLimits
from fhir_imaging.fhir.outcome import (
    BadRequest,
    FhirError,
    Forbidden,
    Gone,
    Issue,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhir_imaging.fhir.references import dangling_references
from fhir_imaging.fhir.registry import Registry
from fhir_imaging.fhir.resource import is_valid_id, new_id
from fhir_imaging.search.execute import Hit
from fhir_imaging.search.query import SearchLimits
from fhir_imaging.service.caller import Caller
from fhir_imaging.service.compartment import PatientCompartment
from fhir_imaging.service.conditional import Criteria, Finder, as_version, criteria_text, single
from fhir_imaging.service.entry_pool import EntryPool
from fhir_imaging.service.granular import GrantQueries, check_granted, granted_current, granted_hits, narrowing
from fhir_imaging.service.patch import FhirPathPatcher, PatchLimits, apply_json_patch
from fhir_imaging.service.search import SearchSpec, searchset
from fhir_imaging.storage.base import HistoryQuery, Reader, Store, Transaction, Version
from fhir_imaging.validation import Validator, has_errors, status_for

PATCH_ATTEMPTS = 5  # a patch applies to the version it read; when another write slips in, it is applied again
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bases:
    """Where a request reached this server: ``url`` is written into links and ``fullUrl``s; a reference with any of
    ``matching`` ('' for a relative one) points at this server."""

    url: str
    matching: tuple[str, ...]

    @classmethod
    def of(cls, url: str, *others: str) -> Bases:
        return cls(url, tuple(dict.fromkeys(["", url, *others])))


@dataclass(frozen=True, slots=True)
class Written:
    """What a create, update or patch did: the version now current, and whether it made the resource (201), or (for
    a conditional create) found it already there and wrote nothing."""

    version: Version
    created: bool
    matched: bool = False


@dataclass(frozen=True, slots=True)
class PatchDocument:
    """A parsed PATCH body: a JSON Patch array (``json_patch``), or a FHIRPath Patch Parameters resource."""

    document: Any
    json_patch: bool
    where: str = ""  # where the document sits, for errors (``Bundle.entry[2].resource``); '' for a request body


class _Moved(Exception):
    """A conditional patch's criteria now name another resource: read again."""


@dataclass
class FhirService:
    settings: Settings
    registry: Registry
    store: Store
    validator: Validator
    entry_pool: EntryPool | None = None  # the bundle workers (service/entry_pool.py), started with the server
    search_limits: SearchLimits = field(init=False)
    patcher: FhirPathPatcher = field(init=False)  # FHIRPath Patch under the patch bounds (``patcher.limits``)
    finder: Finder = field(init=False)
    compartment: PatientCompartment = field(init=False)
    grant_queries: GrantQueries = field(init=False)  # granular scopes' queries, parsed once per (query, type)

    def __post_init__(self) -> None:
        """What the settings bound, built once for every request."""
        settings = self.settings
        self.search_limits = SearchLimits.of(settings)
        fhirpath = FhirPathLimits(settings.fhirpath_max_length, settings.fhirpath_max_items, settings.fhirpath_timeout)
        self.patcher = FhirPathPatcher(
            self.validator.schema, PatchLimits(settings.max_patch_operations, settings.max_body_size, fhirpath)
        )
        self.compartment = PatientCompartment(self.registry)
        self.finder = Finder(self.registry, self.search_limits, self.compartment)
        self.grant_queries = GrantQueries(self.registry, self.search_limits)

    # -- checks every write shares --------------------------------------------------------------------------------

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise one FhirError listing every error of ``resource`` (400 or 422, see docs/validation.md)."""
        issues = self.validator.validate(resource)
        if has_errors(issues):
            raise FhirError(issues=issues, status=status_for(issues))

    def check_references(self, tx: Reader, resource: dict[str, Any], base: str) -> None:
        """With ``--enforce-references``: every literal reference to this server must name a live resource (else
        400). Runs inside the write's transaction, so it sees what the same transaction wrote."""
        if not self.settings.enforce_references:
            return

        def exists(resource_type: str, resource_id: str) -> bool:
            current = tx.read(resource_type, resource_id)
            return current is not None and current.body is not None

        issues = dangling_references(resource, base, exists, self.registry.is_resource_type)
        if issues:
            raise FhirError(issues=issues, status=400)

    # -- patient scopes: the caller's patient compartment bounds what it sees and writes ---------------------------

    def visible(self, caller: Caller, interaction: str, version: StoredResource, bases: Bases) -> bool:
        """Whether ``version`` (a stored version or a search hit) is one the caller may see: always, unless patient
        scopes confine it to a compartment that the resource is not in (a deletion is in none)."""
        patient = caller.confined_to(interaction, version.resource_type)
        if patient is None:
            return True
        return version.body is not None and self.compartment.contains(
            orjson.loads(version.body), patient, bases.matching
        )

    def check_visible(self, caller: Caller, interaction: str, version: Version | None, bases: Bases) -> None:
        """NotFound for a version the caller may not see (patient scopes: it is not confirmed to exist)."""
        if version is not None and not self.visible(caller, interaction, version, bases):
            raise NotFound(f"{version.resource_type}/{version.id} is not known", version.resource_type)

    def check_inside(self, caller: Caller, interaction: str, resource: dict[str, Any], bases: Bases) -> None:
        """Forbidden for a write that would put a resource outside the caller's patient compartment."""
        resource_type = resource["resourceType"]
        patient = caller.confined_to(interaction, resource_type)
        if patient is not None and not self.compartment.contains(resource, patient, bases.matching):
            raise Forbidden(
                f"The access token's patient scopes allow writes in the compartment of Patient/{patient} only: "
                f"this {resource_type} is not in it",
                resource_type,
            )

    # -- granular scopes: what an update, patch or delete replaces, and what a write writes --------------------------

    def check_replaced(
        self, tx: Transaction, caller: Caller, interaction: str, current: Version | None, bases: Bases
    ) -> int | None:
        """The version an update, patch or delete replaces must be one the caller may see (patient scopes: else
        404) and match the caller's grants for ``interaction`` (granular scopes: else 403). Returns its number when
        grants judged it: the write must then replace that very version (see ``write_checked``)."""
        self.check_visible(caller, interaction, current, bases)
        if current is None or current.body is None or caller.granted(interaction, current.resource_type) is None:
            return None
        check_granted(tx, caller, interaction, current.resource_type, [current.id], bases.matching)
        return current.version

    def created_in(
        self,
        tx: Transaction,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        bases: Bases,
        prepared: Any = None,
    ) -> Version:
        """A create's write inside its unit (``prepared``: ``Store.prepare`` of it, done before the unit). Granular
        scopes: the resource written must match the c grants, judged by the search engine on its freshly written
        index rows; a mismatch (403) rolls the unit back."""
        version = tx.create(resource_type, resource_id, resource, prepared).version
        check_granted(tx, caller, "c", resource_type, [version.id], bases.matching)
        return version

    def delete_in(
        self, tx: Transaction, caller: Caller, resource_type: str, resource_id: str, bases: Bases, if_match: int | None
    ) -> Version | None:
        """A delete inside its unit: what it deletes passes ``check_replaced``."""
        checked = self.check_replaced(tx, caller, "d", tx.read(resource_type, resource_id), bases)
        name = f"{resource_type}/{resource_id}"
        return write_checked(lambda pin: tx.delete(resource_type, resource_id, pin), if_match, checked, name)

    # -- granular scopes: what a read may answer ---------------------------------------------------------------------

    def read_in(
        self, reader: Reader, caller: Caller, resource_type: str, resource_id: str, bases: Bases
    ) -> Version | None:
        """The current version on an open unit (None: it never existed). Under granular r scopes only a current
        version that matches them, found by one statement (so the version answered is the one that matched); a
        deletion matches nothing. Patient context is the caller's to check (``check_visible``)."""
        groups = caller.granted("r", resource_type)
        if groups is None:
            return reader.read(resource_type, resource_id)
        hit = granted_current(reader, groups, resource_type, resource_id, bases.matching)
        return as_version(hit) if hit is not None else None

    def check_readable(
        self, reader: Reader, caller: Caller, resource_type: str, resource_id: str, bases: Bases
    ) -> None:
        """NotFound when granular r scopes do not reach the resource's current version (vread and history: their
        past versions are not indexed, so the resource is judged by its current version)."""
        groups = caller.granted("r", resource_type)
        if groups is not None and granted_current(reader, groups, resource_type, resource_id, bases.matching) is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)

    # -- reads ----------------------------------------------------------------------------------------------------

    def read(self, caller: Caller, resource_type: str, resource_id: str, bases: Bases) -> Version:
        """The current version (a deletion marker when deleted: the caller answers 410); NotFound when it never
        existed, or the caller may not see it."""
        if self.reads_by_id(caller, resource_type):
            version = self.store.reading(lambda reader: reader.read(resource_type, resource_id), replica=True)
        else:
            version = self.store.reading(
                lambda reader: self.read_in(reader, caller, resource_type, resource_id, bases), replica=True
            )
        return self.answer_read(caller, resource_type, resource_id, version, bases)

    async def read_async(self, caller: Caller, resource_type: str, resource_id: str, bases: Bases) -> Version | None:
        """``read`` awaited on the event loop (``Store.read_async``: no worker thread on PostgreSQL), when the
        current version by id is all it needs; None when granular scopes make it a search (``read`` answers)."""
        if not self.reads_by_id(caller, resource_type):
            return None
        version = await self.store.read_async(resource_type, resource_id)
        return self.answer_read(caller, resource_type, resource_id, version, bases)

    def reads_by_id(self, caller: Caller, resource_type: str) -> bool:
        """Whether a read of ``resource_type`` is the current version by id alone (no granular r scope narrows it);
        Forbidden when the caller may not read the type at all."""
        caller.authorize("r", resource_type)
        return caller.granted("r", resource_type) is None

    def answer_read(
        self, caller: Caller, resource_type: str, resource_id: str, version: Version | None, bases: Bases
    ) -> Version:
        """What a read answers for the ``version`` found: NotFound for none, or one the caller may not see."""
        if version is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
        if caller.access is not None:
            self.check_visible(caller, "r", version, bases)
        return version

    def vread(self, caller: Caller, resource_type: str, resource_id: str, number: int, bases: Bases) -> Version:
        """Version ``number``; NotFound when there is none, or the caller may not see the resource (granular
        scopes judge its current version: past versions are not indexed)."""
        caller.authorize("r", resource_type)

        def work(reader: Reader) -> Version:
            self.check_readable(reader, caller, resource_type, resource_id, bases)
            version = reader.vread(resource_type, resource_id, number)
            if version is not None:
                self.check_visible(caller, "r", version, bases)
                return version
            current = reader.read(resource_type, resource_id)
            if current is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
            self.check_visible(caller, "r", current, bases)
            raise NotFound(f"{resource_type}/{resource_id} has no version {number}", "vid")

        return self.store.reading(work, replica=True)

    def history(
        self, caller: Caller, query: HistoryQuery, bases: Bases
    ) -> tuple[list[Version], tuple[int, int] | None, int | None]:
        """One page of history (newest first), the cursor of the next page, and (for one resource) the number of
        its versions; NotFound for a resource that never existed (or the caller may not see). With patient scopes
        only one resource's history is available (its current version must be in the compartment); so with
        granular scopes (its current version must match them)."""
        caller.authorize("r", query.resource_type or "*")
        confined = caller.confined_to("r", query.resource_type or "*")
        if confined is not None and query.id is None:
            raise Forbidden("Patient scopes give the history of one resource at a time, not of a type", "_history")
        if caller.granted("r", query.resource_type or "*") is not None and query.id is None:
            raise Forbidden(
                "Scopes with search criteria give the history of one resource at a time, not of a type", "_history"
            )

        def work(reader: Reader) -> tuple[list[Version], tuple[int, int] | None, int | None]:
            total = None
            if query.id is not None:
                assert query.resource_type is not None
                total = reader.count_versions(query.resource_type, query.id)
                if total == 0:
                    raise NotFound(f"{query.resource_type}/{query.id} is not known", query.resource_type)
                if confined is not None:
                    current = reader.read(query.resource_type, query.id)
                    if current is None or not self.visible(caller, "r", current, bases):
                        raise NotFound(f"{query.resource_type}/{query.id} is not known", query.resource_type)
                self.check_readable(reader, caller, query.resource_type, query.id, bases)
            versions, cursor = reader.history(query)
            return versions, cursor, total

        return self.store.reading(work, replica=True)

    def search(self, caller: Caller, spec: SearchSpec, bases: Bases) -> dict[str, Any]:
        """A ``searchset`` Bundle for ``spec``, its statements run on one reader connection."""
        for resource_type in spec.types:
            caller.authorize("s", resource_type, "_type" if len(spec.types) > 1 else resource_type)
        return self.store.reading(lambda reader: self.search_in(reader, caller, spec, bases), replica=True)

    def search_in(self, reader: Reader, caller: Caller, spec: SearchSpec, bases: Bases) -> dict[str, Any]:
        """A search on an open unit of work (a Bundle's GET entry sees what its transaction wrote). Patient scopes
        keep it in the patient's compartment, granular scopes to what their queries match; resources ``_include``
        / ``_revinclude`` find are left out where the caller may not see or read them."""
        confined = {name: caller.confined_to("s", name) for name in spec.types}
        patients = {patient for patient in confined.values() if patient is not None}
        if patients:
            if len(spec.types) > 1:
                raise Forbidden("Patient scopes allow searches of one resource type at a time", "_type")
            kept, items = self.compartment.search_filter(spec.types[0], patients.pop())
            extra = spec.extra + ((kept,) if kept is not None else ())
            spec = dataclasses.replace(spec, items=[*spec.items, *items], extra=extra)
        narrowed = narrowing(caller, "s", spec.types)
        if narrowed:
            spec = dataclasses.replace(spec, extra=spec.extra + narrowed)

        def keep(hits: list[Hit]) -> list[Hit]:
            seen = [hit for hit in hits if caller.may("r", hit.resource_type) and self.visible(caller, "r", hit, bases)]
            return granted_hits(reader, caller, "r", seen, bases.matching)

        return searchset(
            reader, self.registry, self.settings, self.search_limits, spec, bases.url, bases.matching, caller, keep
        )

    # -- writes ---------------------------------------------------------------------------------------------------

    def create(
        self, caller: Caller, resource: dict[str, Any], bases: Bases, if_none_exist: Criteria | None = None
    ) -> Written:
        """A new resource with a server-assigned id (any id in the body is ignored). With ``if_none_exist``
        (http.html#ccreate): one match → nothing is written and the match is answered; several → 412."""
        resource_type = resource["resourceType"]
        caller.authorize("c", resource_type)
        if if_none_exist:
            caller.authorize("s", resource_type, "If-None-Exist")
        resource.pop("id", None)
        self.validate(resource)
        self.check_inside(caller, "c", resource, bases)
        resource_id = new_id()
        prepared = self.store.prepare(resource_type, resource_id, resource)  # outside the write lock

        def work(tx: Transaction) -> Written:
            if if_none_exist:
                existing = self.finder.find_one(
                    tx, resource_type, if_none_exist, bases.matching, "If-None-Exist", caller=caller
                )
                if existing is not None:
                    return Written(as_version(existing), created=False, matched=True)
            self.check_references(tx, resource, bases.url)
            created = self.created_in(tx, caller, resource_type, resource_id, resource, bases, prepared)
            return Written(created, created=True)

        return self.store.transact(work)

    def update(
        self, caller: Caller, resource_id: str, resource: dict[str, Any], bases: Bases, if_match: int | None = None
    ) -> Written:
        """A new version, or update-as-create with the client's id (201). The body's id must be ``resource_id``;
        ``if_match`` makes it version-aware (412 when stale)."""
        resource_type = resource["resourceType"]
        caller.authorize("u", resource_type)
        if not is_valid_id(resource_id):
            raise BadRequest(f"'{resource_id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", "id")
        check_id_element(resource, resource_id)
        self.validate(resource)
        self.check_inside(caller, "u", resource, bases)
        prepared = self.store.prepare(resource_type, resource_id, resource)  # outside the write lock

        return self.store.transact(
            lambda tx: self.update_in(tx, caller, resource_type, resource_id, resource, bases, if_match, True, prepared)
        )

    def conditional_update(
        self, caller: Caller, criteria: Criteria, resource: dict[str, Any], bases: Bases, if_match: int | None = None
    ) -> Written:
        """``PUT /[type]?[search]`` (http.html#cond-update): no match → create (with the body's id, if any); one →
        update it (the body's id, if any, must be its id); several → 412."""
        resource_type = resource["resourceType"]
        caller.authorize("u", resource_type)
        caller.authorize("s", resource_type, "url")
        check_id_element(resource, None)
        self.validate(resource)
        self.check_inside(caller, "u", resource, bases)
        body_id = resource.get("id")

        def work(tx: Transaction) -> Written:
            target, _ = self.finder.update_target(tx, resource_type, criteria, body_id, bases.matching, caller=caller)
            return self.update_in(tx, caller, resource_type, target, resource, bases, if_match)

        return self.store.transact(work)

    def update_in(
        self,
        tx: Transaction,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        bases: Bases,
        if_match: int | None,
        references: bool = True,
        prepared: Any = None,
    ) -> Written:
        """An update's write inside its unit: the version it replaces passes ``check_replaced``; the references
        must resolve (--enforce-references; a Bundle checks them once every entry is written: ``references``
        False); the version written must match the u grants (granular scopes: else 403, the unit rolls back)."""
        checked = self.check_replaced(tx, caller, "u", tx.read(resource_type, resource_id), bases)
        if references:
            self.check_references(tx, resource, bases.url)
        name = f"{resource_type}/{resource_id}"
        result = write_checked(
            lambda pin: tx.update(resource_type, resource_id, resource, pin, prepared), if_match, checked, name
        )
        check_granted(tx, caller, "u", resource_type, [resource_id], bases.matching)
        return Written(result.version, result.created)

    def patch(
        self,
        caller: Caller,
        resource_type: str,
        target: str | Criteria,
        patch: PatchDocument,
        bases: Bases,
        if_match: int | None = None,
    ) -> Written:
        """Patch ``target`` (an id, or criteria for a conditional patch: none → 404, several → 412). The patch
        applies to the version read, outside the write lock; when another write slips in before the write, it is
        applied again to the newer version (``PATCH_ATTEMPTS`` at most), unless ``if_match`` pinned a version
        (then 412). The result is validated and reference-checked like any update."""
        by_criteria = not isinstance(target, str)
        caller.authorize("u", resource_type)
        if by_criteria:
            caller.authorize("s", resource_type, "url")
        for _ in range(PATCH_ATTEMPTS):
            current = self.store.reading(
                lambda reader: self._patch_target(reader, caller, resource_type, target, bases)
            )
            check_pinned(if_match, current)
            patched = self.patched(current, patch)
            self.check_inside(caller, "u", patched, bases)

            def work(tx: Transaction, current: Version = current, patched: dict[str, Any] = patched) -> Written:
                if by_criteria:
                    match = self.finder.find_one(tx, resource_type, target, bases.matching, caller=caller)
                    if match is None or match.id != current.id:
                        raise _Moved
                self.check_references(tx, patched, bases.url)
                return self._patch_write(tx, caller, current, patched, bases)

            try:
                return self.store.transact(work)
            except PreconditionFailed:
                if if_match is not None:
                    raise
            except _Moved:
                continue
        name = f"{resource_type}/{target}" if isinstance(target, str) else f"{resource_type}?{criteria_text(target)}"
        raise PreconditionFailed(f"{name} kept changing while the patch was applied; try again")

    def patch_in(
        self,
        tx: Transaction,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        patch: PatchDocument,
        bases: Bases,
        if_match: int | None = None,
    ) -> Written:
        """A patch inside an open transaction (a Bundle entry): read, patch, validate and write in one unit."""
        current = current_version(tx, resource_type, resource_id)
        self.check_visible(caller, "u", current, bases)
        check_pinned(if_match, current)
        patched = self.patched(current, patch)
        self.check_inside(caller, "u", patched, bases)
        self.check_references(tx, patched, bases.url)
        return self._patch_write(tx, caller, current, patched, bases)

    def _patch_write(
        self, tx: Transaction, caller: Caller, current: Version, patched: dict[str, Any], bases: Bases
    ) -> Written:
        """A patch's write over ``current`` (the version patched, pinned): under granular scopes ``current`` must
        match the u grants (else 403), and so must the patched version written (else 403, the unit rolls back)."""
        check_granted(tx, caller, "u", current.resource_type, [current.id], bases.matching)
        written = tx.update(current.resource_type, current.id, patched, current.version).version
        check_granted(tx, caller, "u", current.resource_type, [current.id], bases.matching)
        return Written(written, False)

    def _patch_target(
        self, reader: Reader, caller: Caller, resource_type: str, target: str | Criteria, bases: Bases
    ) -> Version:
        if isinstance(target, str):
            current = current_version(reader, resource_type, target)
        else:
            matches = self.finder.find(reader, resource_type, target, bases.matching, caller=caller)
            match = single(matches, resource_type, target)
            if match is None:
                raise NotFound(f"No {resource_type} matches the criteria", "url")
            current = current_version(reader, resource_type, match.id)
        self.check_visible(caller, "u", current, bases)
        return current

    def patched(self, current: Version, patch: PatchDocument) -> dict[str, Any]:
        """``current`` patched and validated; a patch may not change the resourceType or the id."""
        resource = orjson.loads(current.body or b"{}")
        where = (patch.where,) if patch.where else ()
        if patch.json_patch:
            result = apply_json_patch(resource, patch.document, self.patcher.limits, *where)
        else:
            result = self.patcher.apply(resource, patch.document, *where)
        if result.get("resourceType") != current.resource_type or result.get("id") != current.id:
            raise Unprocessable("A patch may not change the resourceType or the id", f"{current.resource_type}.id")
        self.validate(result)
        return result

    def delete(
        self, caller: Caller, resource_type: str, resource_id: str, bases: Bases, if_match: int | None = None
    ) -> Version | None:
        """Mark deleted (history keeps every version; reads then answer 410). None when there was nothing to delete
        (it never existed, or is deleted already)."""
        caller.authorize("d", resource_type)

        return self.store.transact(lambda tx: self.delete_in(tx, caller, resource_type, resource_id, bases, if_match))

    def conditional_delete(self, caller: Caller, resource_type: str, criteria: Criteria, bases: Bases) -> list[Version]:
        """``DELETE /[type]?[search]`` (http.html#cdelete): every match, up to ``MAX_CONDITIONAL_DELETE`` (more →
        412, nothing deleted); the deletions made."""
        caller.authorize("d", resource_type)
        caller.authorize("s", resource_type, "url")

        def work(tx: Transaction) -> list[Version]:
            ids = self.finder.delete_targets(tx, resource_type, criteria, bases.matching, caller=caller)
            deleted = [self.delete_in(tx, caller, resource_type, resource_id, bases, None) for resource_id in ids]
            return [version for version in deleted if version is not None]

        return self.store.transact(work)

    # -- $validate --------------------------------------------------------------------------------------------------

    def validation_issues(
        self, caller: Caller, resource: dict[str, Any], resource_id: str | None, mode: str | None
    ) -> list[Issue]:
        """Every issue of ``resource`` ($validate: nothing is stored); in ``update`` mode its id must be the URL's."""
        issues = self.validator.validate(resource)
        if resource_id is not None and mode == "update" and resource.get("id") != resource_id:
            message = f"The resource id does not match the URL's '{resource_id}'"
            issues.append(Issue("error", "invalid", message, (f"{resource['resourceType']}.id",)))
        return issues


def current_version(reader: Reader, resource_type: str, resource_id: str) -> Version:
    """The live current version; NotFound when it never existed, Gone when it is deleted."""
    current = reader.read(resource_type, resource_id)
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known", resource_type)
    if current.body is None:
        raise Gone(f"{resource_type}/{resource_id} was deleted")
    return current


def write_checked(write: Callable[[int | None], T], if_match: int | None, checked: int | None, name: str) -> T:
    """``write(pin)``: the version a write must replace is ``if_match`` when the client named one, else ``checked``
    (the version granular scopes judged: a write that slipped in since must not be replaced unseen; None: any)."""
    try:
        return write(if_match if if_match is not None else checked)
    except PreconditionFailed:
        if if_match is not None:
            raise
        message = f"{name} changed while it was checked against the access token's scopes; try again"
        raise PreconditionFailed(message) from None


def check_pinned(if_match: int | None, current: Version) -> None:
    if if_match is not None and if_match != current.version:
        raise PreconditionFailed(
            f"If-Match asked for version {if_match} of {current.resource_type}/{current.id}, but the server has "
            f"version {current.version}",
            "If-Match",
        )


def check_id_element(resource: dict[str, Any], expected: str | None, where: str | None = None) -> None:
    """``id`` in a body must be a legal id; for an update it must equal the URL's."""
    value = resource.get("id")
    at = where or f"{resource['resourceType']}.id"
    if value is not None and not is_valid_id(value):
        raise BadRequest(f"'{value}' is not a valid id ([A-Za-z0-9-.]{{1,64}})", at)
    if expected is not None and value != expected:
        if value is None:
            raise BadRequest(f"The resource has no id; an update must carry the id of the URL, '{expected}'", at)
        raise BadRequest(f"The resource id '{value}' does not match the id in the URL, '{expected}'", at)
