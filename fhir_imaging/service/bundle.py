"""batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction), over the service's operations.

A transaction is all or nothing. Every resource is validated first. Then, in one database transaction: conditional
entries are resolved against the database (``ifNoneExist``, ``PUT``/``PATCH``/``DELETE [type]?[search]``), every
placeholder (``urn:uuid:``) gets its id and conditional references (``Patient?identifier=…``) their target, every
reference is rewritten, and the entries run in HL7's order (DELETE, POST, PUT/PATCH, GET). The first failing entry
fails the whole request with an OperationOutcome naming it, and nothing is stored. A batch runs each entry on its
own and answers each with its own status (and outcome). The response lists the entries in request order;
``Prefer: return=representation`` adds each resource, ``return=OperationOutcome`` an outcome.
"""

from __future__ import annotations

import base64
import binascii
import functools
from http import HTTPStatus
from typing import Any

import orjson

from fhir_imaging.fhir.bundle import new_bundle
from fhir_imaging.fhir.outcome import (
    BadRequest,
    FhirError,
    Gone,
    Issue,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    PreconditionFailed,
    operation_outcome,
)
from fhir_imaging.fhir.resource import etag, new_id, parse_if_match
from fhir_imaging.fhir.transaction import (
    Entry,
    conditional_references,
    is_placeholder,
    needs_rewrite,
    processing_order,
    read_entries,
    rewrite_references,
    scan_references,
)
from fhir_imaging.service.caller import Caller
from fhir_imaging.service.conditional import as_version
from fhir_imaging.service.core import Bases, FhirService, PatchDocument, check_id_element
from fhir_imaging.service.entry_pool import Ahead, Done, Work
from fhir_imaging.service.patch import parse_patch_document
from fhir_imaging.service.search import SearchSpec
from fhir_imaging.storage.base import Reader, Transaction, Version
from fhir_imaging.validation import has_errors, status_for

BUNDLE_TYPES = ("transaction", "batch")
WRITES = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}  # the SMART permission each write needs


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _in_entry(entry: Entry, exc: FhirError) -> FhirError:
    """The same error, its issues placed in the entry: ``ImagingStudy.status`` → ``Bundle.entry[3].resource.status``."""
    issues = []
    for issue in exc.issues:
        expressions = [f"{entry.where}.resource{e[len(entry.resource_type):]}" if e.split(".")[0].split("[")[0]
                       == entry.resource_type else e for e in issue.expression]  # fmt: skip
        message = f"{entry.where} ({entry.method} {entry.url}): {issue.diagnostics}"
        issues.append(Issue(issue.severity, issue.code, message, (entry.where, *expressions)))
    return FhirError(issues=issues, status=exc.status, headers=exc.headers)


class BundleRunner:
    """Runs the entries of one Bundle through the service (blocking: everything here runs in a worker thread)."""

    def __init__(self, service: FhirService, caller: Caller, preference: str, bases: Bases, strict: bool) -> None:
        self.service = service
        self.caller = caller
        self.preference = preference
        self.bases = bases
        self.strict = strict
        self.reads_left = service.settings.max_bundle_read_resources  # resources the GET entries may still return
        self.ahead: Ahead | None = None  # what the bundle workers make of the resources, as it comes back
        self.positions: dict[int, int] = {}  # entry index → its resource's position in ``ahead``
        self.sent: dict[int, bytes] = {}  # entry index → its resource as sent to the workers (before any rewrite)
        self.ids: dict[int, str] = {}  # by entry index: a POST's new id, drawn before the transaction
        self.valid: set[int] = set()  # entries whose resource was found valid

    # -- before the database, in the bundle workers (service/entry_pool.py): validation and index rows ---------

    def work_ahead(self, entries: list[Entry], transaction: bool) -> bool:
        """With bundle workers and enough resources to write: send them to the workers, which validate them and
        compute the index rows of those whose id is known now. A transaction's placeholders and full URLs are
        rewritten there with the ids known now, as ``resolve_references`` will (a batch entry's are not: each runs
        alone). Whether they were sent."""
        pool = self.service.entry_pool
        writes = [e for e in entries if e.resource is not None and e.method in ("POST", "PUT")]
        if pool is None or not pool.pays_for(len(writes)):
            return False
        mapping: dict[str, str] = {}
        items = []
        for entry in writes:
            assert entry.resource is not None
            resource_id = None
            if entry.method == "POST":
                entry.resource.pop("id", None)  # as ``prepare`` does
                if not entry.if_none_exist:
                    resource_id = self.ids[entry.index] = new_id()
            elif not entry.conditional:
                resource_id = entry.resource_id
            if transaction and entry.full_url and resource_id:
                mapping[entry.full_url] = f"{entry.resource_type}/{resource_id}"
            self.sent[entry.index] = body = orjson.dumps(entry.resource)
            items.append(Work(body, resource_id))
        self.ahead = pool.submit(items, mapping)
        self.positions = {entry.index: position for position, entry in enumerate(writes)}
        return self.ahead is not None

    def _done(self, entry: Entry) -> Done | None:
        """What the workers made of the entry's resource (waiting for it), or None (not sent, or the pool failed)."""
        position = self.positions.get(entry.index)
        return self.ahead.get(position) if self.ahead is not None and position is not None else None

    def _validate(self, entry: Entry) -> None:
        assert entry.resource is not None
        if entry.index in self.valid:
            return
        done = self._done(entry)
        if done is None:  # as received: the transaction may have rewritten its references since it was sent
            sent = self.sent.get(entry.index)
            self.service.validate(entry.resource if sent is None else orjson.loads(sent))
        elif has_errors(done.issues):
            raise FhirError(issues=done.issues, status=status_for(done.issues))
        self.valid.add(entry.index)

    def _prepared(self, entry: Entry) -> Any:
        done = self._done(entry)
        return done.prepared if done is not None else None

    def _first_invalid(self, entries: list[Entry]) -> FhirError | None:
        """The refusal of the first entry (in Bundle order) whose resource is invalid, if any: what ``prepare``
        raises before the transaction when the Bundle validates its resources in this process."""
        for entry in entries:
            if entry.resource is not None and entry.method in ("POST", "PUT"):
                try:
                    self._validate(entry)
                except FhirError as exc:
                    return _in_entry(entry, exc)
        return None

    # -- before the database: what can be checked on the Bundle alone ---------------------------------------------

    def prepare(self, entry: Entry, validate: bool = True) -> None:
        if entry.operation is not None and not (entry.method in ("GET", "HEAD") and entry.operation == "_history"):
            raise NotSupported(f"{entry.url} is not supported in a Bundle", f"{entry.where}.request.url")
        self.authorize(entry)
        if entry.method == "POST" and entry.resource is not None:
            entry.resource.pop("id", None)
        if entry.method == "PUT" and entry.resource is not None:
            check_id_element(entry.resource, entry.resource_id)
        if validate and entry.resource is not None and entry.method in ("POST", "PUT"):
            self._validate(entry)

    def authorize(self, entry: Entry) -> None:
        """The entry's interaction must be allowed to the caller (a transaction needs the scopes of every entry);
        a conditional entry also searches."""
        where = f"{entry.where}.request"
        if entry.method in ("GET", "HEAD"):
            reads = entry.resource_id is not None or entry.operation == "_history"
            self.caller.authorize("r" if reads else "s", entry.resource_type, where)
            return
        self.caller.authorize(WRITES[entry.method], entry.resource_type, where)
        if entry.conditional or (entry.method == "POST" and entry.if_none_exist):
            self.caller.authorize("s", entry.resource_type, where)

    # -- in the database transaction: resolve conditional entries and references, then run ----------------------

    def resolve(self, tx: Transaction, entry: Entry, mapping: dict[str, str]) -> None:
        """Find the target of a conditional entry, give POSTs their id, and record placeholder → Type/id."""
        where = f"{entry.where}.request"
        finder, bases = self.service.finder, self.bases.matching
        caller = self.caller
        if entry.method == "POST":
            if entry.if_none_exist:
                criteria, at = entry.if_none_exist, f"{where}.ifNoneExist"
                match = finder.find_one(tx, entry.resource_type, criteria, bases, at, caller=caller)
                entry.existing = as_version(match) if match is not None else None
            drawn = self.ids.get(entry.index) or new_id()  # drawn before the transaction with bundle workers
            entry.resource_id = entry.existing.id if entry.existing is not None else drawn
        elif entry.conditional and entry.method == "PUT":
            body_id = entry.resource.get("id") if entry.resource else None
            entry.resource_id, _ = finder.update_target(
                tx, entry.resource_type, entry.query, body_id, bases, f"{where}.url", caller=caller
            )
        elif entry.conditional and entry.method == "PATCH":
            match = finder.find_one(tx, entry.resource_type, entry.query, bases, f"{where}.url", caller=caller)
            if match is None:
                raise NotFound(f"No {entry.resource_type} matches {entry.url}", f"{where}.url")
            entry.resource_id = match.id
        elif entry.conditional and entry.method == "DELETE":
            entry.delete_ids = finder.delete_targets(tx, entry.resource_type, entry.query, bases, where, caller=caller)
        if entry.full_url and entry.resource_id and entry.method in ("POST", "PUT"):
            mapping[entry.full_url] = f"{entry.resource_type}/{entry.resource_id}"

    def resolve_references(self, tx: Transaction, entry: Entry, mapping: dict[str, str]) -> None:
        """Rewrite placeholders and conditional references; an unresolvable one fails the entry."""
        if entry.resource is None:
            return
        data = orjson.dumps(entry.resource)
        references = scan_references(data)
        for reference in conditional_references(references) - mapping.keys():
            target_type, _, criteria = reference.partition("?")
            if not self.service.registry.is_resource_type(target_type):
                raise BadRequest(f"The conditional reference {reference} names no resource type", entry.where)
            self.caller.authorize("s", target_type, entry.where)
            match = self.service.finder.find_one(
                tx, target_type, criteria, self.bases.matching, f"{entry.where}.resource", caller=self.caller
            )
            if match is None:
                raise PreconditionFailed(f"The conditional reference {reference} matches no resource", entry.where)
            mapping[reference] = f"{target_type}/{match.id}"
        if needs_rewrite(data, references, mapping):
            rewrite_references(entry.resource, mapping)
            references = scan_references(orjson.dumps(entry.resource))
        for reference in references:
            if is_placeholder(reference):
                raise BadRequest(f"The reference {reference} names no entry of this Bundle", f"{entry.where}.resource")

    def execute(self, tx: Transaction, entry: Entry) -> dict[str, Any]:
        if entry.method in ("GET", "HEAD"):
            return self.get(tx, entry)
        version_wanted = parse_if_match(entry.if_match, f"{entry.where}.request.ifMatch") if entry.if_match else None
        service, caller, bases = self.service, self.caller, self.bases
        if entry.method == "DELETE":
            ids = [i for i in (entry.delete_ids if entry.conditional else [entry.resource_id]) if i is not None]
            deleted = [service.delete_in(tx, caller, entry.resource_type, i, bases, version_wanted) for i in ids]
            response: dict[str, Any] = {"status": _status(204)}
            if len(deleted) == 1 and deleted[0] is not None:
                response["etag"] = etag(deleted[0].version)
            return {"response": response}
        assert entry.resource_id is not None
        if entry.method == "POST":
            assert entry.resource is not None
            if entry.existing is not None:
                return self._written(entry.existing, 200)
            self._validate(entry)  # with bundle workers: its result is waited for here
            service.check_inside(caller, "c", entry.resource, bases)
            prepared = self._prepared(entry)
            created = service.created_in(
                tx, caller, entry.resource_type, entry.resource_id, entry.resource, bases, prepared
            )
            return self._written(created, 201)
        if entry.method == "PUT":
            assert entry.resource is not None
            self._validate(entry)
            service.check_inside(caller, "u", entry.resource, bases)
            result = service.update_in(
                tx,
                caller,
                entry.resource_type,
                entry.resource_id,
                entry.resource,
                bases,
                version_wanted,
                False,
                self._prepared(entry),
            )
            return self._written(result.version, 201 if result.created else 200)
        assert entry.method == "PATCH"
        document = self._patch_document(entry)
        patched = service.patch_in(tx, caller, entry.resource_type, entry.resource_id, document, bases, version_wanted)
        entry.resource = orjson.loads(patched.version.body or b"{}")
        return self._written(patched.version, 200)

    def get(self, reader: Reader, entry: Entry) -> dict[str, Any]:
        """A GET or HEAD entry: a read, vread or search, through ``reader`` (the transaction, or the store when the
        entry needs no write transaction). The resources all GET entries of a Bundle return are bounded by the
        ``max_bundle_read_resources`` setting (checked before each entry; one search page may go past it)."""
        if self.reads_left <= 0:
            limit = self.service.settings.max_bundle_read_resources
            raise PayloadTooLarge(
                f"The GET entries of this Bundle have returned {limit} resources, the most one Bundle may return",
                f"{entry.where}.request",
            )
        result = self._search(reader, entry) if entry.resource_id is None else self._read(reader, entry)
        resource = result.get("resource")
        self.reads_left -= len(resource.get("entry", ())) if isinstance(resource, dict) else 1
        return result

    def _written(self, version: Version, status: int) -> dict[str, Any]:
        response: dict[str, Any] = {
            "status": _status(status),
            "location": f"{version.resource_type}/{version.id}/_history/{version.version}",
            "etag": etag(version.version),
            "lastModified": version.last_updated,
        }
        result: dict[str, Any] = {"response": response}
        if self.preference == "representation" and version.body is not None:
            result["resource"] = orjson.Fragment(version.body)
        elif self.preference == "OperationOutcome":
            message = f"{'Created' if status == 201 else 'Updated'} {version.resource_type}/{version.id}"
            response["outcome"] = operation_outcome([Issue("information", "informational", message)])
        return result

    def _patch_document(self, entry: Entry) -> PatchDocument:
        """A FHIRPath Patch Parameters resource, or a patch sent as a Binary: its data is a JSON Patch array or a
        FHIRPath Patch Parameters, in base64."""
        assert entry.resource is not None
        if entry.resource.get("resourceType") != "Binary":
            return PatchDocument(entry.resource, json_patch=False, where=f"{entry.where}.resource")
        data = f"{entry.where}.resource.data"
        document = parse_patch_document(_binary_data(entry), data)
        parameters = isinstance(document, dict) and document.get("resourceType") == "Parameters"
        return PatchDocument(document, json_patch=not parameters, where=data)

    def _read(self, reader: Reader, entry: Entry) -> dict[str, Any]:
        assert entry.resource_id is not None
        if entry.version_id is not None:
            self.service.check_readable(reader, self.caller, entry.resource_type, entry.resource_id, self.bases)
            version = reader.vread(entry.resource_type, entry.resource_id, entry.version_id)
            if version is None:
                raise NotFound(f"{entry.url} is not known", f"{entry.where}.request.url")
            if version.body is None:
                raise Gone(f"{entry.url} is a deletion")
        else:
            found = self.service.read_in(reader, self.caller, entry.resource_type, entry.resource_id, self.bases)
            if found is None:
                raise NotFound(f"{entry.resource_type}/{entry.resource_id} is not known", entry.resource_type)
            if found.body is None:
                raise Gone(f"{entry.resource_type}/{entry.resource_id} was deleted")
            version = found
        self.service.check_visible(self.caller, "r", version, self.bases)
        response = {"status": _status(200), "etag": etag(version.version), "lastModified": version.last_updated}
        result: dict[str, Any] = {"response": response}
        if entry.method == "GET":
            result["resource"] = orjson.Fragment(version.body or b"{}")
        return result

    def _search(self, reader: Reader, entry: Entry) -> dict[str, Any]:
        spec = SearchSpec(entry.resource_type, (entry.resource_type,), entry.query, self.strict)
        bundle = self.service.search_in(reader, self.caller, spec, self.bases)
        result: dict[str, Any] = {"response": {"status": _status(200)}}
        if entry.method == "GET":
            result["resource"] = bundle
        return result

    def _check_references(self, tx: Transaction, entry: Entry) -> None:
        if entry.resource is not None and entry.method in ("POST", "PUT", "PATCH") and entry.existing is None:
            self.service.check_references(tx, entry.resource, self.bases.url)

    # -- the two kinds of Bundle --------------------------------------------------------------------------------

    def transaction(self, entries: list[Entry]) -> list[dict[str, Any]]:
        ahead = self.work_ahead(entries, transaction=True)
        for entry in entries:
            try:
                self.prepare(entry, validate=not ahead)
            except FhirError as exc:
                raise self._first_invalid(entries[: entry.index]) or _in_entry(entry, exc) from None
        if all(entry.method in ("GET", "HEAD") for entry in entries):
            return self._reads_only(entries)

        def work(tx: Transaction) -> list[dict[str, Any]]:
            mapping: dict[str, str] = {}
            for step in (self.resolve, self.resolve_references):
                for entry in entries:
                    try:
                        step(tx, entry, mapping)
                    except FhirError as exc:
                        raise _in_entry(entry, exc) from None
            _check_distinct_targets(entries)
            results: dict[int, dict[str, Any]] = {}
            for entry in processing_order(entries):
                try:
                    results[entry.index] = self.execute(tx, entry)
                except FhirError as exc:
                    raise _in_entry(entry, exc) from None
            for entry in entries:  # once every entry is written: references may point at later entries
                try:
                    self._check_references(tx, entry)
                except FhirError as exc:
                    raise _in_entry(entry, exc) from None
            return [results[index] for index in range(len(entries))]

        if not ahead:
            return self.service.store.transact(work)

        def overlapped(tx: Transaction) -> list[dict[str, Any]]:
            """With bundle workers, the transaction starts while they validate: each write waits for its own
            resource's result. Any refusal is then the one validating first would give: an invalid resource
            (the first in Bundle order) wins over whatever failed in the transaction, which rolls back."""
            try:
                results = work(tx)
            except Exception:
                first = self._first_invalid(entries)
                if first is not None:
                    raise first from None
                raise
            first = self._first_invalid(entries)  # a conditional create that matched wrote nothing, unchecked
            if first is not None:
                raise first
            return results

        return self.service.store.transact(overlapped)

    def _reads_only(self, entries: list[Entry]) -> list[dict[str, Any]]:
        """A transaction of GET entries writes nothing: it reads on one reader connection, holding no write lock
        (writers go on meanwhile); the first failing entry still fails the whole transaction."""

        def work(reader: Reader) -> list[dict[str, Any]]:
            results = []
            for entry in entries:
                try:
                    results.append(self.get(reader, entry))
                except FhirError as exc:
                    raise _in_entry(entry, exc) from None
            return results

        return self.service.store.reading(work, replica=True)

    def batch(self, entries: list[Entry]) -> list[dict[str, Any]]:
        results = []
        reads_only = all(entry.method in ("GET", "HEAD") for entry in entries)  # else its reads see its writes
        self.work_ahead(entries, transaction=False)
        for entry in entries:
            try:
                self.prepare(entry)
                if entry.method in ("GET", "HEAD"):  # a read needs no write transaction, nor its lock
                    get = functools.partial(self.get, entry=entry)
                    results.append(self.service.store.reading(get, replica=reads_only))
                    continue
                results.append(self.service.store.transact(functools.partial(self._run_alone, entry=entry)))
            except FhirError as exc:
                outcome = operation_outcome(_in_entry(entry, exc).issues)
                results.append({"response": {"status": _status(exc.status), "outcome": outcome}})
        return results

    def _run_alone(self, tx: Transaction, entry: Entry) -> dict[str, Any]:
        mapping: dict[str, str] = {}
        self.resolve(tx, entry, mapping)
        self.resolve_references(tx, entry, mapping)
        result = self.execute(tx, entry)
        self._check_references(tx, entry)
        return result


def _check_distinct_targets(entries: list[Entry]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        targets = entry.delete_ids if entry.method == "DELETE" and entry.conditional else [entry.resource_id]
        if entry.method in ("GET", "HEAD") or entry.existing is not None:
            continue
        for target in targets:
            if target is None:
                continue
            key = (entry.resource_type, target)
            if key in seen:
                raise BadRequest(
                    f"{entry.where} and Bundle.entry[{seen[key]}] both change {key[0]}/{key[1]}: a transaction may "
                    "change a resource once",
                    entry.where,
                )
            seen[key] = entry.index


def _binary_data(entry: Entry) -> bytes:
    assert entry.resource is not None
    data = entry.resource.get("data", "")
    if not isinstance(data, str):
        raise BadRequest("Binary.data is base64 text", f"{entry.where}.resource.data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Binary.data is not base64", f"{entry.where}.resource.data") from None


def run_bundle(
    service: FhirService, caller: Caller, bundle: dict[str, Any], preference: str, bases: Bases, strict: bool
) -> dict[str, Any]:
    """Run a ``batch`` or ``transaction`` Bundle; its ``batch-response`` / ``transaction-response`` Bundle.
    ``preference``: ``Prefer: return=…``; ``strict``: ``Prefer: handling=strict`` for its searches."""
    kind = bundle.get("type")
    if kind not in BUNDLE_TYPES:
        raise BadRequest(f"Bundle.type must be transaction or batch, not {kind!r}", "Bundle.type")
    entries = read_entries(bundle, service.registry.is_resource_type)
    limit = service.settings.max_bundle_entries
    if len(entries) > limit:
        raise PayloadTooLarge(f"The Bundle has {len(entries)} entries; the limit is {limit}", "Bundle.entry")
    runner = BundleRunner(service, caller, preference, bases, strict)
    results = runner.transaction(entries) if kind == "transaction" else runner.batch(entries)
    return new_bundle(f"{kind}-response", results, {"self": bases.url})
