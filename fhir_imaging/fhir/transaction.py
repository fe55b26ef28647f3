"""Reading batch and transaction Bundles: each entry's request, the processing order, placeholder ids and the
rewriting of references (https://hl7.org/fhir/R4/http.html#transaction). Pure: no storage, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_imaging import linear_regex
from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.references import is_absolute
from fhir_imaging.fhir.resource import is_valid_id, parse_whole_number

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# HL7: process DELETE, then POST, then PUT/PATCH, then GET/HEAD (http.html#trules).
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")


@dataclass
class Entry:
    """One Bundle entry's request, read and checked."""

    index: int
    method: str
    url: str
    resource_type: str
    resource_id: str | None = None
    version_id: int | None = None
    query: list[tuple[str, str]] = field(default_factory=list)  # conditional / search parameters
    operation: str | None = None  # "_history" (type or instance history), "$validate"…
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since: str | None = None
    # Set while the Bundle runs (conditional entries are resolved against the database):
    existing: Any = None  # a conditional create's match: nothing is written, the match is answered
    delete_ids: list[str] = field(default_factory=list)  # a conditional delete's matches

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def conditional(self) -> bool:
        return self.resource_id is None and bool(self.query)


def read_entries(bundle: dict[str, Any], is_resource_type: Any) -> list[Entry]:
    """Every entry of a batch/transaction Bundle, in request order, or BadRequest naming the entry at fault."""
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise BadRequest("Bundle.entry must be an array", "Bundle.entry")
    return [_read_entry(index, item, is_resource_type) for index, item in enumerate(raw)]


def _read_entry(index: int, item: Any, is_resource_type: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object", where)
    request = item.get("request")
    if not isinstance(request, dict):
        raise BadRequest(f"{where} has no request (method and url)", f"{where}.request")
    method = request.get("method")
    if method not in METHODS:
        raise BadRequest(f"{where}.request.method must be one of {', '.join(METHODS)}", f"{where}.request.method")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.request.url is missing", f"{where}.request.url")
    full_url = item.get("fullUrl")
    if full_url is not None and (not isinstance(full_url, str) or not full_url):
        raise BadRequest(f"{where}.fullUrl must be a non-empty string (a uri)", f"{where}.fullUrl")
    if full_url is not None and not is_absolute(full_url):
        message = (
            f"{where}.fullUrl must be an absolute URL or a urn:uuid: / urn:oid: placeholder, not {full_url[:80]!r}"
        )
        raise BadRequest(message, f"{where}.fullUrl")
    entry = Entry(index=index, method=method, url=url, resource_type="", full_url=full_url)
    _parse_url(entry, url, is_resource_type)
    for name in ("ifMatch", "ifNoneMatch", "ifNoneExist", "ifModifiedSince"):
        value = request.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{where}.request.{name} must be a string", f"{where}.request.{name}")
    entry.if_match = request.get("ifMatch")
    entry.if_none_match = request.get("ifNoneMatch")
    entry.if_none_exist = request.get("ifNoneExist")
    entry.if_modified_since = request.get("ifModifiedSince")
    resource = item.get("resource")
    if method in ("POST", "PUT", "PATCH"):
        if not isinstance(resource, dict):
            raise BadRequest(f"{where} ({method}) has no resource", f"{where}.resource")
        if method != "PATCH" and resource.get("resourceType") != entry.resource_type:
            raise BadRequest(
                f"{where}: the resource is a {resource.get('resourceType')}, the request URL names "
                f"{entry.resource_type}",
                f"{where}.resource.resourceType",
            )
        entry.resource = resource
    if method == "POST" and (entry.resource_id is not None or entry.operation is not None):
        raise BadRequest(f"{where}: POST goes to a type ([type]), not to {url}", f"{where}.request.url")
    if method in ("PUT", "PATCH", "DELETE") and entry.resource_id is None and not entry.query:
        raise BadRequest(f"{where}: {method} needs [type]/[id] or [type]?[search]", f"{where}.request.url")
    return entry


def _parse_url(entry: Entry, url: str, is_resource_type: Any) -> None:
    where = f"{entry.where}.request.url"
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if parts.scheme or parts.netloc:
        path = path.split("baseR4/", 1)[-1] if "baseR4/" in path else path
    segments = [segment for segment in path.split("/") if segment]
    if not segments or not is_resource_type(segments[0]):
        raise BadRequest(f"{entry.where}: '{url}' does not start with a resource type", where)
    entry.resource_type = segments[0]
    entry.query = parse_qsl(parts.query, keep_blank_values=True)
    rest = segments[1:]
    if rest and rest[0].startswith(("_", "$")):
        entry.operation = rest[0]
        rest = rest[1:]
    elif rest:
        if not is_valid_id(rest[0]):
            raise BadRequest(f"{entry.where}: '{rest[0]}' is not a valid id", where)
        entry.resource_id = rest[0]
        rest = rest[1:]
        if rest and rest[0] == "_history":
            entry.operation = "_history"
            rest = rest[1:]
            if rest:
                entry.version_id = parse_whole_number(rest[0])
                if entry.version_id is None:
                    raise BadRequest(f"{entry.where}: '{rest[0][:40]}' is not a version id", where)
                rest = rest[1:]
        elif rest and rest[0].startswith("$"):
            entry.operation = rest[0]
            rest = rest[1:]
    if rest:
        raise BadRequest(f"{entry.where}: '{url}' is not a URL this server answers", where)


def processing_order(entries: list[Entry]) -> list[Entry]:
    """Entries in HL7's transaction order (DELETE, POST, PUT/PATCH, GET), stable within each group."""
    return sorted(entries, key=lambda entry: (ORDER[entry.method], entry.index))


def is_placeholder(url: str | None) -> bool:
    return isinstance(url, str) and url.startswith(PLACEHOLDER_PREFIXES)


# Scanning the serialised resource (orjson writes no spaces) finds references at C speed, in linear time (RE2); the
# Python walk below then runs only for the resources that hold something to rewrite.
REFERENCE_VALUE = linear_regex.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')
PLACEHOLDER_VALUE = linear_regex.compile(rb'"(urn:(?:uuid|oid):(?:[^"\\]|\\.)*)"')


def _decode(raw: bytes) -> str:
    return raw.decode() if b"\\" not in raw else str(orjson.loads(b'"' + raw + b'"'))


def scan_references(data: bytes) -> list[str]:
    """Every ``reference`` string in a serialised resource."""
    return [_decode(raw) for raw in REFERENCE_VALUE.findall(data)]


def conditional_references(references: list[str]) -> set[str]:
    """The conditional references (``Patient?identifier=…``) among ``references``."""
    return {reference for reference in references if "?" in reference and not is_placeholder(reference)}


def needs_rewrite(data: bytes, references: list[str], mapping: dict[str, str]) -> bool:
    """Whether a serialised resource holds a string that ``mapping`` rewrites (so the walk is worth it)."""
    if not mapping:
        return False
    if any(reference in mapping for reference in references):
        return True
    if any(_decode(raw) in mapping for raw in PLACEHOLDER_VALUE.findall(data)):
        return True
    return any(not is_placeholder(key) and key.encode() in data for key in mapping)


def rewrite_references(value: Any, mapping: dict[str, str]) -> Any:
    """Replace, in place, every string that is a mapped placeholder or full URL (a ``Reference.reference``, or a
    uri/url element naming a resource of the Bundle) by the ``Type/id`` it stands for."""
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(child, str):
                if child in mapping:
                    value[key] = mapping[child]
            elif isinstance(child, dict | list):
                rewrite_references(child, mapping)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                if item in mapping:
                    value[index] = mapping[item]
            elif isinstance(item, dict | list):
                rewrite_references(item, mapping)
    return value
