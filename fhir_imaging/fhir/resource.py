"""Pure helpers on resources as parsed JSON: ids, instants, version stamping, JSON limits.

Spec: https://hl7.org/fhir/R4/resource.html (id, meta) and https://hl7.org/fhir/R4/datatypes.html#instant
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_imaging import linear_regex
from fhir_imaging.fhir.outcome import BadRequest

ID_PATTERN = linear_regex.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_JSON_DEPTH = 100


# The id regex, [A-Za-z0-9\-.]{1,64}, without a regex (it is on every request): ``strip`` of these characters leaves ""
# exactly when every character is one of them.
ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."


def is_valid_id(value: object) -> bool:
    """``value`` is a FHIR id: ``ID_PATTERN``'s full match, tested without running it."""
    return isinstance(value, str) and 0 < len(value) <= 64 and not value.strip(ID_CHARACTERS)


def new_id() -> str:
    """A server-assigned logical id: opaque, unique, legal as a FHIR id."""
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def format_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds: ``2024-06-15T10:30:00.123Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> datetime:
    """The inverse of ``format_instant``; also takes any ISO 8601 instant with an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(instant: str) -> str:
    """An RFC 9110 IMF-fixdate (for ``Last-Modified``) from a stored instant: ``Sun, 06 Nov 1994 08:49:37 GMT``.
    (What ``email.utils.format_datetime(…, usegmt=True)`` writes, at a fraction of its cost: it is on every read.)"""
    m = parse_instant(instant)
    return (
        f"{_DAYS[m.weekday()]}, {m.day:02d} {_MONTHS[m.month - 1]} {m.year:04d} "
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d} GMT"
    )


def etag(version: int) -> str:
    return f'W/"{version}"'


MAX_INT64 = 2**63 - 1  # the largest integer both databases store (versions, sequence numbers, rids)


def is_ascii_digits(text: str) -> bool:
    """``0``-``9`` only (``str.isdigit`` also takes ``²``, ``٣`` and other Unicode digits that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def parse_whole_number(text: str, maximum: int = MAX_INT64) -> int | None:
    """An ASCII decimal of at most ``maximum`` → its value; anything else (signs, Unicode digits, numbers too large
    for the database, 5,000-digit strings that ``int`` would refuse) → None."""
    if not is_ascii_digits(text) or len(text.lstrip("0")) > len(str(maximum)):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_etag(value: str) -> int | None:
    """``W/"3"``, ``"3"`` or ``3`` → 3; anything else → None."""
    text = value.strip()
    if text.startswith(("W/", "w/")):
        text = text[2:]
    return parse_whole_number(text.strip('"'))


def parse_if_match(value: str, where: str = "If-Match") -> int:
    """The version an If-Match asks for (``W/"3"`` → 3); malformed → 400 naming ``where``."""
    version = parse_etag(value)
    if version is None:
        raise BadRequest(f'If-Match: {value!r} is not a version ETag such as W/"3"', where)
    return version


def stamped(resource: dict[str, Any], resource_id: str, version: int, last_updated: str) -> dict[str, Any]:
    """A copy with ``id`` and ``meta.versionId``/``meta.lastUpdated`` set first; the rest stays as it was sent."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    document = {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta}
    document.update((key, value) for key, value in resource.items() if key not in ("resourceType", "id", "meta"))
    return document


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when objects and arrays nest deeper than ``limit`` levels. (Level by level, no recursion; on every
    write, so written for speed: exact type checks, no tuples per node.)"""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:
                    deeper.append(child)
        level = deeper
    return False


UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(body: bytes) -> bytes:
    """``body`` without a leading UTF-8 byte order mark: RFC 8259 §8.1 lets a parser ignore one, and HL7's tools
    accept it (orjson refuses it)."""
    return body[3:] if body.startswith(UTF8_BOM) else body


def parse_resource_json(body: bytes) -> dict[str, Any]:
    """Parse a request body into a resource object, or raise BadRequest naming what is wrong."""
    body = without_bom(body)
    if not body.strip():
        raise BadRequest("The request body is empty: a FHIR resource in JSON was expected")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object holding a FHIR resource")
    if json_depth_exceeds(value):
        raise BadRequest(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels")
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise BadRequest("The resource has no resourceType", "resourceType")
    return value
