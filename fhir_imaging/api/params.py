"""Parsing the result-control parameters shared by history and search: ``_count``, ``_since``, the page cursor."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import format_instant

CURSOR_PARAM = "_cursor"


def parse_count(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise BadRequest(f"_count must be a whole number of 0 or more, not '{value}'", "_count")
    return min(int(value), maximum)


def parse_since(value: str | None) -> str | None:
    """``_since`` (an instant; a date or a dateTime without zone is taken as UTC) → the stored instant format."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"_since must be an instant such as 2024-01-01T00:00:00Z, not '{value}'", "_since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_instant(moment)


def parse_cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"{CURSOR_PARAM} must be a page cursor given by a 'next' link, not '{value}'", CURSOR_PARAM)
    return int(value)
