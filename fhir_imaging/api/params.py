"""Parsing the result-control parameters shared by history and search: ``_count``, ``_since``, the page cursor."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_imaging.fhir.outcome import BadRequest
from fhir_imaging.fhir.resource import format_instant
from fhir_imaging.search.paging import decode_history_cursor
from fhir_imaging.search.query import parse_count as search_count


def parse_count(value: str | None, default: int, maximum: int) -> int:
    return default if value is None else search_count(value, maximum)


def parse_since(value: str | None) -> str | None:
    """``_since`` (an instant; a date or a dateTime without zone is taken as UTC) → the stored instant format."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_instant(moment)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves the instant out of years 1-9999
        raise BadRequest(
            f"_since must be an instant such as 2024-01-01T00:00:00Z, not '{value[:40]}'", "_since"
        ) from None


def parse_cursor(value: str | None) -> tuple[int, int] | None:
    """A history's ``_cursor`` (search.paging says what a cursor is) → the position (tx, seq) its page starts at."""
    return None if value is None else decode_history_cursor(value)
