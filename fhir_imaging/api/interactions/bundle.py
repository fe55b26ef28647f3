"""batch and transaction: ``POST /`` with a Bundle (https://hl7.org/fhir/R4/http.html#transaction).

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
from starlette.requests import Request
from starlette.responses import Response

from fhir_imaging.api.conditional import MAX_CONDITIONAL_DELETE, find, find_one
from fhir_imaging.api.context import (
    Context,
    base_url,
    context,
    endpoint,
    ensure_references,
    in_thread,
    off_loop,
    read_body,
    server_bases,
)
from fhir_imaging.api.formats import check_content_type
from fhir_imaging.api.headers import handling_preference, return_preference
from fhir_imaging.api.headers import if_match as parse_if_match
from fhir_imaging.api.interactions.search import search_bundle
from fhir_imaging.api.rendering import fhir_response
from fhir_imaging.fhir.outcome import (
    BadRequest,
    FhirError,
    Gone,
    Issue,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    PreconditionFailed,
    Unprocessable,
    operation_outcome,
)
from fhir_imaging.fhir.patch import apply_json_patch, parse_patch_document
from fhir_imaging.fhir.resource import etag, format_instant, new_id, now, parse_resource_json
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
from fhir_imaging.storage.base import Store, Transaction, Version

BUNDLE_TYPES = ("transaction", "batch")
Reader = Transaction | Store  # what GET entries read through: both offer read()


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
    """Runs the entries of one Bundle against the store (in a worker thread: everything here blocks)."""

    def __init__(self, ctx: Context, preference: str, base: str, bases: tuple[str, ...], strict: bool) -> None:
        self.ctx = ctx
        self.preference = preference
        self.base = base
        self.bases = bases
        self.strict = strict
        self.patcher = ctx.patcher
        self.reads_left = ctx.settings.max_bundle_read_resources  # resources the GET entries may still return

    # -- before the database: what can be checked on the Bundle alone ---------------------------------------------

    def prepare(self, entry: Entry) -> None:
        if entry.operation is not None and not (entry.method in ("GET", "HEAD") and entry.operation == "_history"):
            raise NotSupported(f"{entry.url} is not supported in a Bundle", f"{entry.where}.request.url")
        if entry.method == "POST" and entry.resource is not None:
            entry.resource.pop("id", None)
        if entry.method == "PUT" and entry.resource is not None:
            body_id = entry.resource.get("id")
            if entry.resource_id is not None and body_id != entry.resource_id:
                raise BadRequest(
                    f"The resource id {body_id!r} does not match the request URL's {entry.resource_id!r}",
                    f"{entry.resource_type}.id",
                )
        if entry.resource is not None and entry.method in ("POST", "PUT"):
            self.ctx.validate(entry.resource)

    # -- in the database transaction: resolve conditional entries and references, then run ----------------------

    def resolve(self, tx: Transaction, entry: Entry, mapping: dict[str, str]) -> None:
        """Find the target of a conditional entry, give POSTs their id, and record placeholder → Type/id."""
        where = f"{entry.where}.request"
        if entry.method == "POST":
            if entry.if_none_exist:
                entry.existing = find_one(
                    self.ctx, tx, entry.resource_type, entry.if_none_exist, self.bases, f"{where}.ifNoneExist"
                )
            entry.resource_id = entry.existing.id if entry.existing is not None else new_id()
        elif entry.conditional and entry.method in ("PUT", "PATCH"):
            match = find_one(self.ctx, tx, entry.resource_type, entry.query, self.bases, f"{where}.url")
            body_id = entry.resource.get("id") if entry.resource and entry.method == "PUT" else None
            if match is None and entry.method == "PATCH":
                raise NotFound(f"No {entry.resource_type} matches {entry.url}", f"{where}.url")
            if match is not None and body_id is not None and body_id != match.id:
                raise BadRequest(f"The resource id {body_id!r} is not the match's {match.id!r}", f"{where}.url")
            entry.resource_id = match.id if match is not None else (body_id or new_id())
        elif entry.conditional and entry.method == "DELETE":
            matches = find(self.ctx, tx, entry.resource_type, entry.query, self.bases, MAX_CONDITIONAL_DELETE + 1)
            if len(matches) > MAX_CONDITIONAL_DELETE:
                raise PreconditionFailed(f"{entry.url} matches more than {MAX_CONDITIONAL_DELETE} resources", where)
            entry.delete_ids = [match.id for match in matches]
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
            if not self.ctx.registry.is_resource_type(target_type):
                raise BadRequest(f"The conditional reference {reference} names no resource type", entry.where)
            match = find_one(self.ctx, tx, target_type, criteria, self.bases, f"{entry.where}.resource")
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
        version_wanted = parse_if_match(entry.if_match) if entry.if_match else None
        if entry.method == "DELETE":
            ids = entry.delete_ids if entry.conditional else [entry.resource_id]
            deleted = [tx.delete(entry.resource_type, i, version_wanted) for i in ids if i is not None]
            response: dict[str, Any] = {"status": _status(204)}
            if len(deleted) == 1 and deleted[0] is not None:
                response["etag"] = etag(deleted[0].version)
            return {"response": response}
        assert entry.resource_id is not None
        if entry.method == "POST":
            assert entry.resource is not None
            if entry.existing is not None:
                return self._written(entry.existing, 200)
            created = tx.create(entry.resource_type, entry.resource_id, entry.resource).version
            return self._written(created, 201)
        if entry.method == "PUT":
            assert entry.resource is not None
            result = tx.update(entry.resource_type, entry.resource_id, entry.resource, version_wanted)
            return self._written(result.version, 201 if result.created else 200)
        assert entry.method == "PATCH"
        return self._patch(tx, entry, version_wanted)

    def get(self, reader: Reader, entry: Entry) -> dict[str, Any]:
        """A GET or HEAD entry: a read, vread or search, through ``reader`` (the transaction, or the store when the
        entry needs no write transaction). The resources all GET entries of a Bundle return are bounded by the
        ``max_bundle_read_resources`` setting (checked before each entry; one search page may go past it)."""
        if self.reads_left <= 0:
            limit = self.ctx.settings.max_bundle_read_resources
            raise PayloadTooLarge(
                f"The GET entries of this Bundle have returned {limit} resources, the most one Bundle may return",
                f"{entry.where}.request",
            )
        result = self._search(entry) if entry.resource_id is None else self._read(reader, entry)
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

    def _patch(self, tx: Transaction, entry: Entry, version_wanted: int | None) -> dict[str, Any]:
        assert entry.resource is not None and entry.resource_id is not None
        current = self._current(tx, entry)
        resource = orjson.loads(current.body or b"{}")
        if entry.resource.get("resourceType") == "Binary":
            patched = self._binary_patch(resource, entry)
        else:
            patched = self.patcher.apply(resource, entry.resource, f"{entry.where}.resource")
        if patched.get("resourceType") != entry.resource_type or patched.get("id") != entry.resource_id:
            raise Unprocessable("A patch may not change the resourceType or the id", f"{entry.resource_type}.id")
        self.ctx.validate(patched)
        expected = version_wanted if version_wanted is not None else current.version
        result = tx.update(entry.resource_type, entry.resource_id, patched, expected)
        entry.resource = patched
        return self._written(result.version, 200)

    def _binary_patch(self, resource: dict[str, Any], entry: Entry) -> dict[str, Any]:
        """A patch sent as a Binary: its data is a JSON Patch array, or a FHIRPath Patch Parameters, in base64."""
        data = f"{entry.where}.resource.data"
        document = parse_patch_document(_binary_data(entry), data)
        if isinstance(document, dict) and document.get("resourceType") == "Parameters":
            return self.patcher.apply(resource, document, data)
        return apply_json_patch(resource, document, self.patcher.limits, data)

    def _current(self, tx: Reader, entry: Entry) -> Version:
        assert entry.resource_id is not None
        current = tx.read(entry.resource_type, entry.resource_id)
        if current is None:
            raise NotFound(f"{entry.resource_type}/{entry.resource_id} is not known", entry.resource_type)
        if current.body is None:
            raise Gone(f"{entry.resource_type}/{entry.resource_id} was deleted")
        return current

    def _read(self, tx: Reader, entry: Entry) -> dict[str, Any]:
        if entry.version_id is not None:
            assert entry.resource_id is not None
            version = self.ctx.store.vread(entry.resource_type, entry.resource_id, entry.version_id)
            if version is None:
                raise NotFound(f"{entry.url} is not known", f"{entry.where}.request.url")
            if version.body is None:
                raise Gone(f"{entry.url} is a deletion")
        else:
            version = self._current(tx, entry)
        response = {"status": _status(200), "etag": etag(version.version), "lastModified": version.last_updated}
        result: dict[str, Any] = {"response": response}
        if entry.method == "GET":
            result["resource"] = orjson.Fragment(version.body or b"{}")
        return result

    def _search(self, entry: Entry) -> dict[str, Any]:
        bundle = search_bundle(
            self.ctx, entry.resource_type, (entry.resource_type,), entry.query, self.base, self.bases, self.strict
        )
        result: dict[str, Any] = {"response": {"status": _status(200)}}
        if entry.method == "GET":
            result["resource"] = bundle
        return result

    def _check_references(self, tx: Transaction, entry: Entry) -> None:
        if entry.resource is not None and entry.method in ("POST", "PUT", "PATCH") and entry.existing is None:
            ensure_references(self.ctx, self.base, entry.resource, tx)

    # -- the two kinds of Bundle --------------------------------------------------------------------------------

    def transaction(self, entries: list[Entry]) -> list[dict[str, Any]]:
        for entry in entries:
            try:
                self.prepare(entry)
            except FhirError as exc:
                raise _in_entry(entry, exc) from None
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

        return self.ctx.store.transact(work)

    def _reads_only(self, entries: list[Entry]) -> list[dict[str, Any]]:
        """A transaction of GET entries writes nothing: it reads from the store, holding no write lock (writers go
        on meanwhile); the first failing entry still fails the whole transaction."""
        results = []
        for entry in entries:
            try:
                results.append(self.get(self.ctx.store, entry))
            except FhirError as exc:
                raise _in_entry(entry, exc) from None
        return results

    def batch(self, entries: list[Entry]) -> list[dict[str, Any]]:
        results = []
        for entry in entries:
            try:
                self.prepare(entry)
                if entry.method in ("GET", "HEAD"):  # a read needs no write transaction, nor its lock
                    results.append(self.get(self.ctx.store, entry))
                    continue
                results.append(self.ctx.store.transact(functools.partial(self._run_alone, entry=entry)))
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


@endpoint
async def batch_or_transaction(request: Request) -> Response:
    ctx = context(request)
    check_content_type(request.headers.get("content-type"))
    body = await read_body(request)
    bundle = await off_loop(len(body), parse_resource_json, body)
    if bundle["resourceType"] != "Bundle":
        raise BadRequest(f"POST to the base takes a Bundle, not a {bundle['resourceType']}", "resourceType")
    kind = bundle.get("type")
    if kind not in BUNDLE_TYPES:
        raise BadRequest(f"Bundle.type must be transaction or batch, not {kind!r}", "Bundle.type")
    entries = await off_loop(len(body), read_entries, bundle, ctx.registry.is_resource_type)
    limit = ctx.settings.max_bundle_entries
    if len(entries) > limit:
        raise PayloadTooLarge(f"The Bundle has {len(entries)} entries; the limit is {limit}", "Bundle.entry")
    strict = handling_preference(request.headers.get("prefer")) == "strict"
    runner = BundleRunner(
        ctx, return_preference(request.headers.get("prefer")), base_url(request), server_bases(request), strict
    )
    results = await in_thread(runner.transaction if kind == "transaction" else runner.batch, entries)
    response = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(now())},
        "type": f"{kind}-response",
        "link": [{"relation": "self", "url": base_url(request)}],
        "entry": results,
    }
    if not results:
        del response["entry"]
    return fhir_response(request, response)
