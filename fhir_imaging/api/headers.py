"""Request headers of the FHIR RESTful API: If-Match, If-None-Match, If-Modified-Since, Prefer.

Spec: https://hl7.org/fhir/R4/http.html#concurrency, #cread, #ops (Prefer)
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

from fhir_imaging.fhir.resource import parse_etag, parse_if_match, parse_instant

RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def if_match(value: str | None) -> int | None:
    """The version an If-Match asks for (``W/"3"`` → 3), None when absent; malformed → 400."""
    return None if value is None else parse_if_match(value)


def none_match(value: str | None, current_version: int) -> bool:
    """True when If-None-Match names the current version (or ``*``): the client's copy is current (304)."""
    if not value:
        return False
    return any(tag.strip() == "*" or parse_etag(tag) == current_version for tag in value.split(","))


def not_modified_since(value: str | None, last_updated: str) -> bool:
    """True when the resource has not changed since If-Modified-Since (compared to the second)."""
    if not value:
        return False
    try:
        since: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False  # an unparseable date is ignored (RFC 9110 §13.1.3)
    if since.tzinfo is None:
        return False
    return parse_instant(last_updated).replace(microsecond=0) <= since


def _prefer(value: str | None, name: str) -> str | None:
    """The value of one preference in a Prefer header (RFC 7240), e.g. ``return`` or ``handling``."""
    for part in (value or "").split(","):
        for token in part.split(";"):
            key, _, preference = token.strip().partition("=")
            if key.strip() == name:
                return preference.strip().strip('"')
    return None


def return_preference(value: str | None) -> str:
    """``Prefer: return=…`` → minimal | representation | OperationOutcome (default representation)."""
    preference = _prefer(value, "return")
    return preference if preference in RETURN_PREFERENCES else "representation"


def handling_preference(value: str | None) -> str:
    """``Prefer: handling=strict|lenient`` (default lenient)."""
    return "strict" if _prefer(value, "handling") == "strict" else "lenient"
